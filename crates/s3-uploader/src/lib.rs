//! Content-addressed archive store: S3 (aws-sdk-s3) and local-folder backends behind one trait.
