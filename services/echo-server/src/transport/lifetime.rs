//! What drains or closes a connection besides its peer, the same over TCP
//! (`conn`) and QUIC (`h3`): shutdown, a call's GOAWAY or close, a memory
//! budget its peer does not read, a chaos schedule, the maximum age and its
//! grace.

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use crate::context::{Ask, ConnectionControl};
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
    /// What its calls and the memory budgets ask of it.
    control: ConnectionControl,
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
        chaos: Option<ConnectionSubscription>,
        stop: CancellationToken,
        (max_age, max_age_grace): (Option<Duration>, Option<Duration>),
    ) -> Self {
        Self {
            control,
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
                ask = self.control.asked(if self.draining { &CLOSES } else { &ASKS }) => match ask {
                    Ask::Close => return Turn::Close("a call asked"),
                    Ask::CloseUnread => return Turn::Close("its peer reads none of its answers"),
                    Ask::GoAway => "asked by a call",
                },
                (event, subscription) = next_chaos(&mut self.chaos) => match event {
                    ConnectionChaos::Close => return Turn::Close("a chaos schedule picked it"),
                    ConnectionChaos::GoAway => {
                        self.chaos = Some(Box::pin(subscription.next()));
                        "chaos schedule"
                    }
                },
                () = self.stop.cancelled(), if !self.draining => "shutdown",
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

/// The asks watched while draining: only the closes, as a connection drains once.
const CLOSES: [Ask; 2] = [Ask::Close, Ask::CloseUnread];
/// The asks watched before draining, the closes first.
const ASKS: [Ask; 3] = [Ask::Close, Ask::CloseUnread, Ask::GoAway];

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

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetime(control: &ConnectionControl) -> Lifetime {
        Lifetime::new(
            control.clone(),
            None,
            CancellationToken::new(),
            (None, None),
        )
    }

    /// Asks made before the connection looks are kept; GOAWAY drains once,
    /// and a close asked while draining still closes.
    #[tokio::test]
    async fn asks_are_kept_until_seen_and_a_close_ends_a_drain() {
        let control = ConnectionControl::default();
        let mut lifetime = lifetime(&control);
        control.go_away();
        assert_eq!(lifetime.next().await, Turn::Drain("asked by a call"));
        control.go_away();
        let again = tokio::time::timeout(Duration::from_millis(50), lifetime.next()).await;
        assert!(again.is_err(), "a second GOAWAY while draining: {again:?}");
        control.close();
        assert_eq!(lifetime.next().await, Turn::Close("a call asked"));
    }

    /// The budgets' close says why, and is seen by a watcher already waiting.
    #[tokio::test]
    async fn a_waiting_watcher_sees_the_budgets_close() {
        let control = ConnectionControl::default();
        let mut lifetime = lifetime(&control);
        let asker = control.clone();
        let closing = tokio::spawn(async move {
            tokio::task::yield_now().await;
            asker.ask(Ask::CloseUnread);
        });
        let turn = tokio::time::timeout(Duration::from_secs(5), lifetime.next()).await;
        assert_eq!(turn, Ok(Turn::Close("its peer reads none of its answers")));
        closing.await.expect("the asking task");
    }
}
