//! What a provider test runs against, started in one call: the provider's
//! fake, a daemon archiving from it, and that daemon's archive (and, for
//! an S3 stage, the Garage behind it, stopped only after the daemon).

use test_support::garage::Garage;

use crate::archive::Archive;
use crate::config::{StoreUnderTest, config};
use crate::daemon::Daemon;

/// A fake provider, a daemon configured for it, and the daemon's archive.
#[derive(Debug)]
pub struct Stage<F> {
    /// The provider's fake (or fakes).
    pub fake: F,
    /// The daemon, in a temp dir of its own.
    pub daemon: Daemon,
    /// Where the daemon archives.
    pub archive: Archive,
    /// The S3 server of an S3 stage; dropped after the daemon.
    _garage: Option<Garage>,
}

impl<F> Stage<F> {
    /// Starts a daemon with [`config()`]`(store, accounts)` (`accounts`
    /// from [`crate::accounts`], pointed at `fake`).
    pub fn start(fake: F, store: &StoreUnderTest, accounts: &str) -> Self {
        Self::new(fake, store, &config(store, accounts), None)
    }

    /// [`Stage::start`] on `garage`, which the stage keeps running.
    pub fn on_garage(fake: F, garage: Garage, accounts: &str) -> Self {
        let store = StoreUnderTest::garage(&garage);
        Self::new(fake, &store, &config(&store, accounts), Some(garage))
    }

    /// A daemon with a whole `config` of the caller's, archiving to
    /// `store` (on `garage`, if given, which the stage keeps running).
    pub fn new(fake: F, store: &StoreUnderTest, config: &str, garage: Option<Garage>) -> Self {
        let daemon = Daemon::start_in_temp_dir(config);
        let archive = Archive::of(store, &daemon.workdir);
        Stage {
            fake,
            daemon,
            archive,
            _garage: garage,
        }
    }
}
