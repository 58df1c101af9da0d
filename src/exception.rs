//! Errors raised by callbacks, and the loop's exception handler.
//!
//! asyncio hands such errors to `loop.call_exception_handler(context)`; so does loopd. A
//! callback that panics is caught, reported here, and the loop goes on. A custom handler
//! that itself panics is reported by [`EventLoop::default_exception_handler`].

use std::any::Any;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use crate::EventLoop;
use crate::metrics::bump;

/// Errors carried in a context are shared, so contexts can be cloned and nested.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, as asyncio's exception-handler `context` dict.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ExceptionContext {
    /// A human-readable description (always present).
    pub message: String,
    /// The error itself, if there was one (a panic becomes a [`PanicError`]).
    pub error: Option<SharedError>,
    /// The callback that failed, by its closure's type name.
    pub handle: Option<&'static str>,
    /// The future or task involved, by name.
    pub future: Option<String>,
    /// The original context when the exception handler itself failed.
    pub context: Option<Box<ExceptionContext>>,
}

impl ExceptionContext {
    /// A context with just a message.
    pub fn new(message: impl Into<String>) -> Self {
        ExceptionContext {
            message: message.into(),
            ..Default::default()
        }
    }

    /// Adds the error.
    pub fn with_error(mut self, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.error = Some(Arc::new(error));
        self
    }
}

/// A panic caught by the loop, with its message.
#[derive(Clone, Debug, thiserror::Error)]
#[error("panicked: {0}")]
pub struct PanicError(pub String);

impl PanicError {
    /// Extracts the message from a `catch_unwind` payload.
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_string());
        PanicError(message)
    }
}

/// A custom exception handler, as set by [`EventLoop::set_exception_handler`].
pub type ExceptionHandler = Rc<dyn Fn(&EventLoop, &ExceptionContext)>;

impl fmt::Display for ExceptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(handle) = self.handle {
            write!(f, "; handle: {handle}")?;
        }
        if let Some(future) = &self.future {
            write!(f, "; future: {future}")?;
        }
        if let Some(error) = &self.error {
            write!(f, "; error: {error}")?;
        }
        if let Some(context) = &self.context {
            write!(f, "; while handling: {context}")?;
        }
        Ok(())
    }
}

impl EventLoop {
    /// Sets the handler for errors raised by callbacks; `None` restores the default.
    pub fn set_exception_handler(
        &self,
        handler: Option<impl Fn(&EventLoop, &ExceptionContext) + 'static>,
    ) {
        *self.core.exception_handler.borrow_mut() = handler.map(|h| Rc::new(h) as ExceptionHandler);
    }

    /// The custom handler, if one is set.
    pub fn exception_handler(&self) -> Option<ExceptionHandler> {
        self.core.exception_handler.borrow().clone()
    }

    /// Logs `context` at error level and counts it in [`Metrics::unhandled_errors`](crate::Metrics).
    pub fn default_exception_handler(&self, context: &ExceptionContext) {
        bump(&self.core.counters.unhandled_errors, 1);
        tracing::error!(target: "loopd", "{context}");
    }

    /// Hands `context` to the custom handler, or the default one. If the custom handler
    /// panics, the default handler reports that, with the original context inside.
    pub fn call_exception_handler(&self, context: ExceptionContext) {
        let Some(handler) = self.exception_handler() else {
            return self.default_exception_handler(&context);
        };
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(self, &context)));
        if let Err(payload) = outcome {
            self.default_exception_handler(&ExceptionContext {
                message: "unhandled error in exception handler".into(),
                error: Some(Arc::new(PanicError::from_payload(&*payload))),
                context: Some(Box::new(context)),
                ..Default::default()
            });
        }
    }
}
