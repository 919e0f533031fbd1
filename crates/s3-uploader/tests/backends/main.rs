//! The store conformance suite ([`suite`]) run against every backend, plus
//! the checks only one backend can make.

mod fs_backend;
mod s3_backend;
mod suite;

/// Generates one `#[tokio::test]` per suite case for a backend: `$make` is
/// an async fn returning `Option<impl Backend>` (`None`: skip). A new case
/// in [`suite`] is listed here once and runs against every backend.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(
            @cases $make;
            small_blob_round_trip,
            blob_staged_in_memory_round_trip,
            memory_bytes_that_are_not_their_recorded_size_are_refused,
            empty_blob_round_trip,
            same_key_again_is_already_present,
            large_blob_is_stored_intact,
            spool_that_does_not_match_its_hash_is_refused,
            large_spool_that_does_not_match_its_hash_is_refused,
            spool_shorter_than_recorded_is_refused,
            manifest_is_overwritten,
            bad_keys_are_rejected,
            a_manifest_for_other_bytes_goes_beside_never_over,
            a_key_segment_too_long_for_a_file_name_is_permanent,
            ping_succeeds,
            listing_pages_through_a_prefix_in_key_order,
            read_hashed_and_size_of_measure_stored_objects,
            read_hashed_sees_bytes_changed_behind_the_store,
            presign_get_downloads_the_object_or_is_none,
            streamed_blob_round_trip,
            small_streamed_blob_round_trip,
            streamed_bytes_that_do_not_match_the_key_are_refused,
            streaming_a_stored_blob_again_changes_nothing,
            a_stream_dropped_half_way_leaves_nothing,
            a_stream_that_is_not_its_announced_length_is_not_stored,
            delete_removes_an_object_and_a_missing_one_is_no_error,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $make().await else { return };
                $crate::suite::$case(&backend).await;
            }
        )*
    };
}
