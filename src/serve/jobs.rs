//! The bounded queue in front of the pipeline, and model tasks run off the async threads
//! with cancellation when the client goes away or the time limit passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::AppState;
use crate::pipeline::{CancelToken, Event, Events, Flow, Pipeline, PipelineError};

/// Places for requests that wait for or run on the pipeline (which runs one task at a time).
pub struct Queue {
    places: Arc<Semaphore>,
    capacity: usize,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// A place, or 429 when every place is taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.places
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::queue_full(self.capacity))
    }

    /// Requests waiting or running.
    pub fn depth(&self) -> usize {
        self.capacity - self.places.available_permits()
    }
}

/// Why a task's events callback stops it.
#[derive(Clone, Default)]
pub struct Stop {
    /// The client went away (the response future or stream was dropped).
    pub client_gone: CancelToken,
    timed_out: Arc<AtomicBool>,
}

/// Cancels the task when dropped: the handler future is dropped when the client
/// disconnects, so this ends the job within one step.
pub struct CancelOnDrop(pub CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The events callback of a served task: forwards to `inner` and stops at the deadline or
/// when the client is gone.
pub struct Guarded<'a> {
    pub inner: &'a mut dyn FnMut(&Event) -> Flow,
    pub stop: Stop,
    pub deadline: Instant,
}

impl Events for Guarded<'_> {
    fn event(&mut self, event: &Event) -> Flow {
        if self.stop.client_gone.is_cancelled() {
            return Flow::Cancel;
        }
        if Instant::now() > self.deadline {
            self.stop.timed_out.store(true, Ordering::Relaxed);
            return Flow::Cancel;
        }
        (self.inner)(event)
    }
}

/// Run `task` on a blocking thread holding `place` until it ends; dropping the returned
/// future (the client disconnected) cancels it. A task stopped by the time limit is a 503.
pub async fn run<T: Send + 'static>(
    state: Arc<AppState>,
    place: OwnedSemaphorePermit,
    task: impl FnOnce(&Pipeline, &mut dyn Events) -> Result<T, PipelineError> + Send + 'static,
) -> Result<T, ApiError> {
    let stop = Stop::default();
    let _cancel = CancelOnDrop(stop.client_gone.clone());
    run_with(state, place, stop, |_| Flow::Continue, task).await
}

/// [`run`] with the caller's `stop` and an events callback of its own (streaming).
pub async fn run_with<T: Send + 'static>(
    state: Arc<AppState>,
    place: OwnedSemaphorePermit,
    stop: Stop,
    mut on_event: impl FnMut(&Event) -> Flow + Send + 'static,
    task: impl FnOnce(&Pipeline, &mut dyn Events) -> Result<T, PipelineError> + Send + 'static,
) -> Result<T, ApiError> {
    let timed_out = stop.timed_out.clone();
    let limit = state.config.time_limit;
    let joined = tokio::task::spawn_blocking(move || {
        // The place is held until the task really ends, not just until the client leaves.
        let _place = place;
        let client_gone = stop.client_gone.clone();
        let mut events = Guarded {
            inner: &mut on_event,
            stop,
            deadline: Instant::now() + limit,
        };
        let result = task(&state.pipeline, &mut events);
        if matches!(result, Err(PipelineError::Cancelled)) && client_gone.is_cancelled() {
            state.metrics.cancelled();
        }
        result
    })
    .await;
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(PipelineError::Cancelled)) if timed_out.load(Ordering::Relaxed) => {
            Err(ApiError::timed_out(limit.as_secs()))
        }
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(ApiError::internal(format!("the model task failed: {e}"))),
    }
}
