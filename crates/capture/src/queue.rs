//! The FIFO from the data path into the writer thread: a locked list that the writer takes
//! whole, each time it looks.
//!
//! A record costs its sender one lock that is rarely contended, a push, and a wake only when
//! the writer is blocked. A general channel (tokio's mpsc) costs more here: per record, its
//! sender updated four cache lines that the writer's side also writes (the tail, the slot's
//! readiness, a permit count and the waker's state), each a transfer between cores, and an
//! exchange makes five records. Here the writer touches the lock once per look, not per record.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// The data path's end. Dropping it tells the receiver no more will come.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The writer's end. Dropping it makes later sends drop their items.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// The list the senders filled last time, emptied, kept for its capacity.
    spare: Vec<T>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

struct State<T> {
    items: Vec<T>,
    /// The receiver is blocked in [`Receiver::wait`]: the next send wakes it.
    receiver_waiting: bool,
    sender_gone: bool,
    receiver_gone: bool,
}

/// A list larger than this (in items) is not kept for reuse: a burst does not hold its
/// memory for the rest of the session.
const KEEP_CAPACITY: usize = 1 << 14;

pub fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: Vec::new(),
            receiver_waiting: false,
            sender_gone: false,
            receiver_gone: false,
        }),
        wake: Condvar::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            spare: Vec::new(),
        },
    )
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock but an allocation failure, which aborts.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets go of the lock, then wakes the receiver if it is blocked (a futex call, which
    /// senders make only then).
    fn unlock_and_wake(&self, mut state: MutexGuard<'_, State<T>>) {
        let wake = std::mem::take(&mut state.receiver_waiting);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item`, never waiting; once the receiver is gone the item is dropped.
    pub fn send(&self, item: T) {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            drop(state);
            drop(item);
            return;
        }
        state.items.push(item);
        self.shared.unlock_and_wake(state);
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_gone = true;
        self.shared.unlock_and_wake(state);
    }
}

impl<T> Receiver<T> {
    /// Everything queued since the last take, oldest first; empty when nothing is. Items
    /// the caller leaves in the iterator are dropped with it.
    pub fn take(&mut self) -> std::vec::Drain<'_, T> {
        if self.spare.capacity() > KEEP_CAPACITY {
            self.spare = Vec::new();
        }
        std::mem::swap(&mut self.shared.lock().items, &mut self.spare);
        self.spare.drain(..)
    }

    /// Returns true at once if something is queued; otherwise runs `before_blocking`, then
    /// blocks until something is. False when nothing is queued and the sender is gone.
    pub fn wait(&mut self, before_blocking: impl FnOnce()) -> bool {
        let mut before_blocking = Some(before_blocking);
        let mut state = self.shared.lock();
        loop {
            if !state.items.is_empty() {
                return true;
            }
            if state.sender_gone {
                return false;
            }
            if let Some(work) = before_blocking.take() {
                // Outside the lock: senders do not wait for it.
                drop(state);
                work();
                state = self.shared.lock();
                continue;
            }
            state.receiver_waiting = true;
            state = self
                .shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        let left = std::mem::take(&mut state.items);
        drop(state);
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_the_order_they_went_in() {
        let (tx, mut rx) = queue();
        for i in 0..5 {
            tx.send(i);
        }
        assert!(rx.wait(|| panic!("something is queued: no blocking")));
        assert_eq!(rx.take().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(rx.take().count(), 0);
        tx.send(5);
        assert_eq!(rx.take().collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn a_blocked_receiver_wakes_for_each_sender_thread_and_sees_every_item() {
        let (tx, mut rx) = queue();
        let tx = Arc::new(tx);
        let senders: Vec<_> = (0..4u64)
            .map(|s| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        tx.send((s, i));
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0u64; 4];
        // Returns false only once every sender has finished and all is taken.
        while rx.wait(|| {}) {
            for (s, i) in rx.take() {
                // Each sender's items in its order.
                assert_eq!(i, next[s as usize]);
                next[s as usize] += 1;
            }
        }
        for t in senders {
            t.join().unwrap();
        }
        assert_eq!(next, [10_000; 4]);
    }

    #[test]
    fn wait_ends_when_the_sender_goes_with_nothing_queued() {
        let (tx, mut rx) = queue::<u8>();
        let waiter = std::thread::spawn(move || rx.wait(|| {}));
        drop(tx);
        assert!(!waiter.join().unwrap());
    }

    #[test]
    fn sends_after_the_receiver_is_gone_are_dropped() {
        let (tx, rx) = queue();
        let item = Arc::new(());
        tx.send(item.clone());
        drop(rx);
        assert_eq!(
            Arc::strong_count(&item),
            1,
            "what was queued went with the receiver"
        );
        tx.send(item.clone());
        assert_eq!(Arc::strong_count(&item), 1, "a late send is dropped");
    }
}
