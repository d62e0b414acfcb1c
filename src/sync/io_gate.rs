//! Test-only gates at the points where the sync loop starts blocking file I/O: the workdir scan's
//! read of a `metadata` file, an upload's listing and reading of a timeline directory, a
//! download's writing into one. A test holds a gate (the thread that reaches it blocks until the
//! test releases it) to show that the async runtime goes on meanwhile, i.e. that the I/O never
//! runs on a runtime thread. Outside `cfg(test)` a gate is an empty inline function.
//!
//! Owns the gates only. Must not be called anywhere but right before blocking file I/O.

/// Marks that blocking file I/O on `path` starts here (blocks while a test holds `path`).
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn reached(_path: &std::path::Path) {}

#[cfg(test)]
pub(crate) use held::{Held, reached};

#[cfg(test)]
mod held {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::time::Duration;

    /// A held path: who reached it, and the release the reaching thread waits for.
    type Gate = (PathBuf, Sender<()>, Receiver<()>);
    static GATES: Mutex<Vec<Gate>> = Mutex::new(Vec::new());

    /// How long a test waits for a gate to be reached before it fails.
    const BOUND: Duration = Duration::from_secs(60);

    /// Blocks the calling thread, the first time after a test held `path`, until the test
    /// releases it (or drops its [`Held`]).
    pub(crate) fn reached(path: &Path) {
        let gate = {
            let mut gates = GATES.lock().unwrap();
            let i = gates.iter().position(|(p, _, _)| p == path);
            i.map(|i| gates.remove(i))
        };
        if let Some((_, reached, release)) = gate {
            let _ = reached.send(());
            let _ = release.recv();
        }
    }

    /// A gate the test holds; dropping it releases the gate.
    pub(crate) struct Held {
        path: PathBuf,
        reached: Receiver<()>,
        release: Option<Sender<()>>,
    }

    impl Held {
        /// Holds the next blocking I/O on `path`.
        pub(crate) fn hold(path: &Path) -> Held {
            let (reached_tx, reached) = channel();
            let (release, release_rx) = channel();
            let gate = (path.to_path_buf(), reached_tx, release_rx);
            GATES.lock().unwrap().push(gate);
            Held {
                path: path.to_path_buf(),
                reached,
                release: Some(release),
            }
        }

        /// Waits (bounded) until a thread is blocked at the gate.
        pub(crate) fn wait_reached(&self) {
            self.reached
                .recv_timeout(BOUND)
                .unwrap_or_else(|e| panic!("nothing reached {}: {e}", self.path.display()));
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            GATES.lock().unwrap().retain(|(p, _, _)| p != &self.path);
            if let Some(release) = self.release.take() {
                let _ = release.send(());
            }
        }
    }
}
