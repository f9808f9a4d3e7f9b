//! The recording body: wraps a body on the data path, tees each data frame into the
//! recorder (a refcount bump, no copy) and tells an observer how the body ended.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::PollSemaphore;

use super::model::Direction;
use super::writer::{OnFull, Record, Recorder};

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

/// A body that records every frame it yields.
pub struct RecordingBody<B: Body, O: BodyObserver> {
    inner: B,
    ex: u64,
    dir: Direction,
    recorder: Recorder,
    budget: PollSemaphore,
    observer: Arc<O>,
    /// A frame that waits for room in the queue (lossless mode), with its arrival time.
    pending: Option<(Frame<Bytes>, Instant)>,
    /// Bytes of this body handed to the recorder so far, and how many it may take.
    recorded: u64,
    record_limit: u64,
    sent_frames: bool,
    done: bool,
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
            recorded: 0,
            record_limit,
            inner,
            ex,
            dir,
            recorder,
            budget,
            observer,
            pending: None,
            sent_frames: false,
            done: false,
        }
    }

    /// The part of a frame to record: a refcounted slice, no copy.
    fn recorded_part(&self, data: &Bytes) -> Bytes {
        let room = self.record_limit.saturating_sub(self.recorded) as usize;
        data.slice(..data.len().min(room))
    }

    fn send_frame(
        &mut self,
        data: &Bytes,
        part: Bytes,
        at: Instant,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
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
        });
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
                            this.observer.frame(this.dir, data.len(), at);
                            this.pending = Some((frame, at));
                        }
                        // Trailers and empty frames pass straight through.
                        _ => return Poll::Ready(Some(Ok(frame))),
                    }
                }
                Some(Err(e)) => {
                    let at = Instant::now();
                    this.close(at);
                    this.observer.failed(this.dir, at, e.to_string());
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let at = Instant::now();
                    this.close(at);
                    this.observer.ended(this.dir, at);
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
        let part = this.recorded_part(&data);
        let cost = this.recorder.frame_cost(part.len());
        match this.recorder.on_full() {
            OnFull::Wait => match this.budget.poll_acquire_many(cx, cost) {
                Poll::Pending => {
                    this.pending = Some((frame, at));
                    return Poll::Pending;
                }
                Poll::Ready(permit) => this.send_frame(&data, part, at, permit),
            },
            OnFull::Drop => {
                if let Some(permit) = this.recorder.try_budget(cost) {
                    this.send_frame(&data, part, at, Some(permit));
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
        if self.done {
            return;
        }
        let at = Instant::now();
        // The body's record closes before the exchange's `end`, so readers meet them in that order.
        self.close(at);
        // hyper may drop a body it knows is empty without polling it: that is an end, not an abort.
        if self.pending.is_none() && self.inner.is_end_stream() {
            self.observer.ended(self.dir, at);
        } else {
            self.observer.abandoned(self.dir, at);
        }
    }
}
