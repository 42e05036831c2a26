//! Which results the coordinator answered: seen with inotify on each
//! worker's `results/` directory (the uploader removes a result only once
//! it is answered).

use super::*;

/// The results the workers' uploaders answered for: every
/// `results/<replica>.json` removed, per worker, seen by inotify.
#[derive(Debug)]
pub(super) struct AnswerWatch {
    pub(super) fd: Arc<OwnedFd>,
    pub(super) wds: Vec<i32>,
    pub(super) thread: std::thread::JoinHandle<anyhow::Result<Vec<Answered>>>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Answered {
    /// Results written (renamed into `results/`).
    pub(super) saved: HashSet<i64>,
    /// Results removed: answered by the coordinator.
    pub(super) removed: HashSet<i64>,
}

impl AnswerWatch {
    pub(super) fn start(dirs: &[PathBuf]) -> anyhow::Result<AnswerWatch> {
        let fd = Arc::new(inotify::init(inotify::CreateFlags::CLOEXEC)?);
        let mut wds = Vec::new();
        for dir in dirs {
            let results = dir.join("results");
            std::fs::create_dir_all(&results)?;
            wds.push(inotify::add_watch(
                &*fd,
                &results,
                inotify::WatchFlags::MOVED_TO | inotify::WatchFlags::DELETE,
            )?);
        }
        let (reader_fd, reader_wds) = (fd.clone(), wds.clone());
        let thread = std::thread::spawn(move || {
            let mut answered = vec![Answered::default(); reader_wds.len()];
            let mut open: HashSet<i32> = reader_wds.iter().copied().collect();
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
            let mut reader = inotify::Reader::new(&*reader_fd, &mut buf);
            while !open.is_empty() {
                let event = reader.next()?;
                let flags = event.events();
                if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                    bail!("the inotify queue overflowed: results answered were not all seen");
                }
                if flags.contains(inotify::ReadFlags::IGNORED) {
                    open.remove(&event.wd());
                    continue;
                }
                let Some(i) = reader_wds.iter().position(|w| *w == event.wd()) else {
                    continue;
                };
                let Some(replica) = event
                    .file_name()
                    .and_then(|n| n.to_str().ok())
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.parse::<i64>().ok())
                else {
                    continue;
                };
                if flags.contains(inotify::ReadFlags::MOVED_TO) {
                    answered[i].saved.insert(replica);
                }
                if flags.contains(inotify::ReadFlags::DELETE) {
                    answered[i].removed.insert(replica);
                }
            }
            Ok(answered)
        });
        Ok(AnswerWatch { fd, wds, thread })
    }

    /// Ends the watch (after every worker has exited) and returns what it
    /// saw: removing a watch queues its IN_IGNORED after its last event.
    pub(super) fn finish(self) -> anyhow::Result<Vec<Answered>> {
        for wd in &self.wds {
            inotify::remove_watch(&*self.fd, *wd)?;
        }
        self.thread
            .join()
            .map_err(|_| anyhow!("the inotify reader panicked"))?
    }
}
