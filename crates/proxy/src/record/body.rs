//! The recording body: wraps a body on the data path, tees each data frame into the
//! recorder (a refcount bump, no copy) and tells an observer how the body ended.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::PollSemaphore;

use mcptap_capture::model::Direction;
use mcptap_capture::writer::{OnFull, Record, Recorder};

/// Learns how a recorded body progressed and ended.
pub trait BodyObserver: Send + Sync + 'static {
    /// A data frame of `len` bytes passed at `at`.
    fn frame(&self, dir: Direction, len: usize, at: Instant);
    /// The body reached its end.
    fn ended(&self, dir: Direction, at: Instant);
    /// Reading the body failed.
    fn failed(&self, dir: Direction, at: Instant, error: String);
    /// The body was dropped before its end (the reader went away).
    fn abandoned(&self, dir: Direction, at: Instant);
}

/// Records one body's frames and tells an observer how the body ended: the part of
/// [`RecordingBody`] that does not depend on how the frames are read, used as it is by the
/// HTTP/1.1 fast path, which reads and writes bytes itself.
pub struct Tap<O: BodyObserver> {
    ex: u64,
    dir: Direction,
    recorder: Recorder,
    observer: Arc<O>,
    /// Bytes of this body handed to the recorder so far, and how many it may take.
    recorded: u64,
    record_limit: u64,
    sent_frames: bool,
    done: bool,
}

impl<O: BodyObserver> Tap<O> {
    /// Records at most `record_limit` bytes of the body's data: frames past the limit reach
    /// the recorder as lengths only, so a huge download costs the recorder nothing.
    pub fn new(
        ex: u64,
        dir: Direction,
        recorder: Recorder,
        observer: Arc<O>,
        record_limit: u64,
    ) -> Self {
        Tap {
            ex,
            dir,
            recorder,
            observer,
            recorded: 0,
            record_limit,
            sent_frames: false,
            done: false,
        }
    }

    /// The part of a frame to record: a refcounted slice, no copy.
    fn recorded_part(&self, data: &Bytes) -> Bytes {
        let room = self.record_limit.saturating_sub(self.recorded) as usize;
        data.slice(..data.len().min(room))
    }

    /// A data frame arrived (not empty); the observer counts it.
    fn arrived(&self, len: usize, at: Instant) {
        self.observer.frame(self.dir, len, at);
    }

    fn send(
        &mut self,
        data: &Bytes,
        part: Bytes,
        at: Instant,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        last: bool,
    ) {
        self.recorded += part.len() as u64;
        self.sent_frames = true;
        self.recorder.record(Record::Frame {
            ex: self.ex,
            dir: self.dir,
            t: self.recorder.clock().us_at(at),
            len: data.len() as u64,
            bytes: part,
            permit,
            last,
        });
    }

    /// Records a frame that passed at `at`. In lossless mode it waits for room in the
    /// queue, so a full queue slows the data path instead of losing the frame.
    pub async fn frame(&mut self, data: Bytes, at: Instant) {
        self.pass(data, at, false).await;
    }

    /// Records the body's last frame and its end, both at `at`, in one record.
    pub async fn last_frame(&mut self, data: Bytes, at: Instant) {
        self.pass(data, at, true).await;
    }

    async fn pass(&mut self, data: Bytes, at: Instant, last: bool) {
        if data.is_empty() {
            if last {
                self.end(at);
            }
            return;
        }
        self.arrived(data.len(), at);
        let part = self.recorded_part(&data);
        let cost = self.recorder.frame_cost(part.len());
        let permit = match self.recorder.on_full() {
            OnFull::Wait => Ok(self.recorder.acquire(cost).await),
            OnFull::Drop => self.recorder.try_budget(cost).map(Some).ok_or(()),
        };
        match permit {
            Ok(permit) if last && !self.done => {
                self.send(&data, part, at, permit, true);
                self.done = true;
                self.observer.ended(self.dir, at);
            }
            Ok(permit) => self.send(&data, part, at, permit, false),
            // Dropped for want of room: the end still goes on the record.
            Err(()) if last => self.end(at),
            Err(()) => {}
        }
    }

    fn close(&mut self, at: Instant) {
        self.done = true;
        if self.sent_frames {
            self.recorder.record(Record::BodyEnd {
                ex: self.ex,
                dir: self.dir,
                t: self.recorder.clock().us_at(at),
            });
        }
    }

    /// The body reached its end.
    pub fn end(&mut self, at: Instant) {
        if !self.done {
            self.close(at);
            self.observer.ended(self.dir, at);
        }
    }

    /// Reading the body failed.
    pub fn fail(&mut self, at: Instant, error: String) {
        if !self.done {
            self.close(at);
            self.observer.failed(self.dir, at, error);
        }
    }

    /// The body was left before its end (the reader went away).
    pub fn abandon(&mut self, at: Instant) {
        if !self.done {
            // The body's record closes before the exchange's `end`, so readers meet them in
            // that order.
            self.close(at);
            self.observer.abandoned(self.dir, at);
        }
    }
}

impl<O: BodyObserver> Drop for Tap<O> {
    fn drop(&mut self) {
        self.abandon(Instant::now());
    }
}

/// A body that records every frame it yields.
pub struct RecordingBody<B: Body, O: BodyObserver> {
    inner: B,
    tap: Tap<O>,
    budget: PollSemaphore,
    /// A frame that waits for room in the queue (lossless mode), with its arrival time.
    pending: Option<(Frame<Bytes>, Instant)>,
}

impl<B: Body, O: BodyObserver> RecordingBody<B, O> {
    /// Records at most `record_limit` bytes of the body's data (all of it passes through):
    /// frames past the limit reach the recorder as lengths only, so a huge download costs
    /// the recorder nothing.
    pub fn new(
        inner: B,
        ex: u64,
        dir: Direction,
        recorder: Recorder,
        observer: Arc<O>,
        record_limit: u64,
    ) -> Self {
        let budget = recorder.budget();
        RecordingBody {
            inner,
            tap: Tap::new(ex, dir, recorder, observer, record_limit),
            budget,
            pending: None,
        }
    }
}

impl<B, O> Body for RecordingBody<B, O>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    O: BodyObserver,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let at = Instant::now();
                    match frame.data_ref() {
                        Some(data) if !data.is_empty() => {
                            this.tap.arrived(data.len(), at);
                            this.pending = Some((frame, at));
                        }
                        // Trailers are a body's last frame (a reader may stop there), so
                        // the body ends with them.
                        _ if frame.is_trailers() => {
                            this.tap.end(at);
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        // Empty frames pass straight through.
                        _ => return Poll::Ready(Some(Ok(frame))),
                    }
                }
                Some(Err(e)) => {
                    this.tap.fail(Instant::now(), e.to_string());
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.tap.end(Instant::now());
                    return Poll::Ready(None);
                }
            }
        }
        // Hand the frame on only once its record is queued: in lossless mode a full queue
        // slows the data path instead of losing the event.
        let Some((frame, at)) = this.pending.take() else {
            return Poll::Pending;
        };
        let data = frame.data_ref().cloned().unwrap_or_default();
        let tap = &mut this.tap;
        let part = tap.recorded_part(&data);
        let cost = tap.recorder.frame_cost(part.len());
        match tap.recorder.on_full() {
            OnFull::Wait => match this.budget.poll_acquire_many(cx, cost) {
                Poll::Pending => {
                    this.pending = Some((frame, at));
                    return Poll::Pending;
                }
                Poll::Ready(permit) => tap.send(&data, part, at, permit, false),
            },
            OnFull::Drop => {
                if let Some(permit) = tap.recorder.try_budget(cost) {
                    tap.send(&data, part, at, Some(permit), false);
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body, O: BodyObserver> Drop for RecordingBody<B, O> {
    fn drop(&mut self) {
        let at = Instant::now();
        // hyper may drop a body it knows is empty without polling it: that is an end, not an abort.
        if self.pending.is_none() && self.inner.is_end_stream() {
            self.tap.end(at);
        } else {
            self.tap.abandon(at);
        }
    }
}
