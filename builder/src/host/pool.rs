//! A fixed set of reusable buffers shared by worker threads: it bounds the memory
//! of a parallel pipeline, and closing it releases every waiting worker.
//!
//! The pipelines that use it hand out work in order (frame 0, 1, 2, ...) and
//! consume results in that order. A worker takes a buffer *before* it takes the
//! next frame number, so the lowest unfinished frame always holds a buffer and can
//! finish: the pipeline cannot deadlock however the workers are scheduled.

use std::sync::{Condvar, Mutex};

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
}
