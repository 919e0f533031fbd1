//! The store conformance suite ([`suite`]) run against every backend, plus
//! the checks only one backend can make.

mod fs_backend;
mod s3_backend;
mod suite;

/// Generates one `#[tokio::test]` per suite case for a backend: `$make` is
/// an async fn returning `Option<impl Backend>` (`None`: skip).
#[macro_export]
macro_rules! conformance_tests {
    ($make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $make().await else { return };
                $crate::suite::$case(&backend).await;
            }
        )*
    };
}
