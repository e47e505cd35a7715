//! The one ordered worker pool: items `0..count` handed to worker threads, their
//! results consumed in item order on the calling thread, with a fixed set of
//! reusable buffers bounding the memory. Compression, the frame check of
//! `meetbox verify`, the flash's decompression and its read-back all run on it.
//!
//! A worker takes a buffer *before* it takes the next item number, so the lowest
//! unfinished item always holds a buffer and can finish: the pipeline cannot
//! deadlock however the workers are scheduled. Closing the buffer pool releases
//! every waiting worker, which is how a failure anywhere stops the others.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Condvar, Mutex};

use anyhow::{anyhow, Result};

pub struct Pool<T> {
    state: Mutex<State<T>>,
    available: Condvar,
}

struct State<T> {
    items: Vec<T>,
    closed: bool,
}

impl<T> Pool<T> {
    pub fn new(items: impl IntoIterator<Item = T>) -> Pool<T> {
        Pool {
            state: Mutex::new(State {
                items: items.into_iter().collect(),
                closed: false,
            }),
            available: Condvar::new(),
        }
    }

    /// Waits for a buffer; `None` once the pool is closed.
    pub fn take(&self) -> Option<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.closed {
                return None;
            }
            if let Some(item) = state.items.pop() {
                return Some(item);
            }
            state = self
                .available
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Returns a buffer.
    pub fn put(&self, item: T) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.items.push(item);
        drop(state);
        self.available.notify_one();
    }

    /// Makes every current and later `take` return `None`: the pipeline stops.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.available.notify_all();
    }
}

/// Runs `work` on items `0..count` across `workers` threads and hands each result to
/// `consume` in item order, on the calling thread.
///
/// Each worker makes its own state once with `init` (a compressor, say), then
/// loops: take a buffer from `buffers`, take the next item, `work` it into the
/// buffer. `consume` owns the buffer it is given and must `put` it back, at once
/// or from a later stage, or the workers starve. It returns `Break` to stop early
/// without an error (the next stage stopped and reports why).
///
/// Returns how many items were consumed: fewer than `count` only when `consume`
/// broke off or someone closed `buffers`. A failing worker or `consume` closes
/// `buffers`; the first failure is returned, `consume`'s before the workers'.
pub fn run_ordered<B, S, T>(
    count: usize,
    workers: usize,
    buffers: &Pool<B>,
    init: impl Fn() -> Result<S> + Sync,
    work: impl Fn(&mut S, usize, &mut B) -> Result<T> + Sync,
    mut consume: impl FnMut(usize, B, T) -> Result<ControlFlow<()>>,
) -> Result<usize>
where
    B: Send,
    T: Send,
{
    let workers = workers.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let (done_tx, done_rx) = sync_channel::<(usize, B, T)>(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let done = done_tx.clone();
                let (next, init, work) = (&next, &init, &work);
                scope.spawn(move || {
                    let result = (|| -> Result<()> {
                        let mut state = init()?;
                        while let Some(mut buf) = buffers.take() {
                            let index = next.fetch_add(1, Ordering::SeqCst);
                            if index >= count {
                                buffers.put(buf);
                                break;
                            }
                            let out = work(&mut state, index, &mut buf)?;
                            if done.send((index, buf, out)).is_err() {
                                break; // the consumer stopped
                            }
                        }
                        Ok(())
                    })();
                    if result.is_err() {
                        buffers.close(); // releases the other workers
                    }
                    result
                })
            })
            .collect();
        drop(done_tx);
        let consumed = (|| -> Result<usize> {
            let mut waiting = BTreeMap::new();
            let mut consumed = 0;
            for (index, buf, out) in &done_rx {
                waiting.insert(index, (buf, out));
                while let Some((buf, out)) = waiting.remove(&consumed) {
                    consumed += 1;
                    if consume(consumed - 1, buf, out)?.is_break() {
                        return Ok(consumed);
                    }
                }
            }
            Ok(consumed)
        })();
        if consumed.is_err() || consumed.as_ref().is_ok_and(|&n| n < count) {
            buffers.close();
        }
        drop(done_rx);
        let joined: Result<()> = handles.into_iter().try_for_each(|handle| {
            handle
                .join()
                .map_err(|_| anyhow!("a worker thread panicked"))?
        });
        let consumed = consumed?;
        joined?;
        Ok(consumed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_releases_waiting_takers() {
        let pool = Pool::new([1u8]);
        assert_eq!(pool.take(), Some(1));
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| pool.take());
            std::thread::sleep(std::time::Duration::from_millis(20));
            pool.close();
            assert_eq!(waiter.join().unwrap(), None);
        });
        pool.put(2);
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn put_wakes_a_taker() {
        let pool = Pool::new(Vec::<u8>::new());
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| pool.take());
            std::thread::sleep(std::time::Duration::from_millis(20));
            pool.put(7);
            assert_eq!(waiter.join().unwrap(), Some(7));
        });
    }

    #[test]
    fn results_arrive_in_order_with_few_buffers() {
        let pool = Pool::new((0..3).map(|_| Vec::<u8>::new()));
        let mut seen = Vec::new();
        let consumed = run_ordered(
            50,
            4,
            &pool,
            || Ok(()),
            |_, index, buf| {
                // Later items finish first, so the reordering is exercised.
                std::thread::sleep(std::time::Duration::from_micros((50 - index as u64) * 20));
                buf.clear();
                buf.push(index as u8);
                Ok(index * 2)
            },
            |index, buf, doubled| {
                assert_eq!(buf, vec![index as u8]);
                seen.push(doubled);
                pool.put(buf);
                Ok(ControlFlow::Continue(()))
            },
        )
        .unwrap();
        assert_eq!(consumed, 50);
        assert_eq!(seen, (0..50).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_failing_worker_stops_the_run_with_its_error() {
        let pool = Pool::new((0..4).map(|_| ()));
        let mut consumed_items = Vec::new();
        let err = run_ordered(
            100,
            3,
            &pool,
            || Ok(()),
            |_, index, _| {
                anyhow::ensure!(index != 7, "item {index} is unreadable");
                Ok(index)
            },
            |index, buf, _| {
                consumed_items.push(index);
                pool.put(buf);
                Ok(ControlFlow::Continue(()))
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "item 7 is unreadable");
        assert!(consumed_items.iter().all(|&i| i < 7), "{consumed_items:?}");
    }

    /// 100 items on 2 workers, each item its own number; `decide` judges each in order.
    fn count_through(decide: impl Fn(usize) -> Result<ControlFlow<()>>) -> Result<usize> {
        let pool = Pool::new((0..4).map(|_| ()));
        run_ordered(
            100,
            2,
            &pool,
            || Ok(()),
            |_, index, _| Ok(index),
            |index, buf, _| {
                pool.put(buf);
                decide(index)
            },
        )
    }

    #[test]
    fn the_consumers_error_wins_and_break_stops_early() {
        let err = count_through(|index| {
            anyhow::ensure!(index < 5, "item {index} does not match");
            Ok(ControlFlow::Continue(()))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 5 does not match");
        let consumed = count_through(|index| {
            Ok(if index == 9 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
        assert_eq!(consumed, 10);
    }

    #[test]
    fn a_failing_init_is_reported() {
        let pool = Pool::new([()]);
        let err = run_ordered(
            3,
            2,
            &pool,
            || -> Result<()> { Err(anyhow!("cannot start zstd")) },
            |_, index, _| Ok(index),
            |_, buf, _| {
                pool.put(buf);
                Ok(ControlFlow::Continue(()))
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "cannot start zstd");
    }
}
