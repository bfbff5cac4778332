//! What drains or closes a connection besides its peer, the same over TCP
//! (`conn`) and QUIC (`h3`): shutdown, a call's GOAWAY or close, a memory
//! budget its peer does not read, a chaos schedule, the maximum age and its
//! grace.

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use crate::context::ConnectionControl;
use crate::ops::chaos::{ConnectionChaos, ConnectionSubscription};

type ChaosEvent = dyn Future<Output = (ConnectionChaos, ConnectionSubscription)> + Send;

/// What a connection is to do next, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Send GOAWAY and let the open calls finish (once per connection).
    Drain(&'static str),
    /// Close now, ending the open calls unanswered.
    Close(&'static str),
}

/// The watches of one connection.
pub(crate) struct Lifetime {
    control: ConnectionControl,
    /// Cancelled when the connection's peer reads none of its answers while
    /// a memory budget is used up.
    unread: CancellationToken,
    /// Boxed: only connections of a server with a chaos schedule pay for it.
    chaos: Option<Pin<Box<ChaosEvent>>>,
    stop: CancellationToken,
    /// The maximum age, then (once past it) the end of its grace: one timer,
    /// boxed only when there is a maximum age.
    age_timer: Option<Pin<Box<Sleep>>>,
    max_age_grace: Option<Duration>,
    past_age: bool,
    draining: bool,
}

impl Lifetime {
    pub(crate) fn new(
        control: ConnectionControl,
        unread: CancellationToken,
        chaos: Option<ConnectionSubscription>,
        stop: CancellationToken,
        (max_age, max_age_grace): (Option<Duration>, Option<Duration>),
    ) -> Self {
        Self {
            control,
            unread,
            chaos: chaos.map(|subscription| Box::pin(subscription.next()) as _),
            stop,
            age_timer: max_age.map(|age| Box::pin(tokio::time::sleep(age))),
            max_age_grace,
            past_age: false,
            draining: false,
        }
    }

    /// The next turn: a drain at most once, whatever begins it; the age's
    /// timer stays armed while draining, so a call's GOAWAY cannot outlast
    /// age + grace.
    pub(crate) async fn next(&mut self) -> Turn {
        loop {
            let drain = tokio::select! {
                () = self.control.close.cancelled() => return Turn::Close("a call asked"),
                () = self.unread.cancelled() => {
                    return Turn::Close("its peer reads none of its answers");
                }
                (event, subscription) = next_chaos(&mut self.chaos) => match event {
                    ConnectionChaos::Close => return Turn::Close("a chaos schedule picked it"),
                    ConnectionChaos::GoAway => {
                        self.chaos = Some(Box::pin(subscription.next()));
                        "chaos schedule"
                    }
                },
                () = self.stop.cancelled(), if !self.draining => "shutdown",
                () = self.control.go_away.cancelled(), if !self.draining => "asked by a call",
                () = sleep_or_never(&mut self.age_timer) => {
                    if self.past_age {
                        return Turn::Close("past its maximum age and grace");
                    }
                    self.past_age = true;
                    self.age_timer = self
                        .max_age_grace
                        .map(|grace| Box::pin(tokio::time::sleep(grace)));
                    "maximum age"
                }
            };
            if !self.draining {
                self.draining = true;
                return Turn::Drain(drain);
            }
        }
    }

    /// Whether the connection is draining.
    pub(crate) fn draining(&self) -> bool {
        self.draining
    }
}

/// The next event of a connection's chaos schedules; never without any.
fn next_chaos(
    chaos: &mut Option<Pin<Box<ChaosEvent>>>,
) -> impl Future<Output = (ConnectionChaos, ConnectionSubscription)> + '_ {
    std::future::poll_fn(move |cx| match chaos {
        Some(event) => event.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

/// `timer`'s end; never without one.
fn sleep_or_never(timer: &mut Option<Pin<Box<Sleep>>>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match timer {
        Some(sleep) => sleep.as_mut().poll(cx),
        None => Poll::Pending,
    })
}
