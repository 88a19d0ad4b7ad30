//! Running a list of futures a few at a time inside one task (no spawning, so they may borrow),
//! results in the order of the list.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

/// Awaits every future of `futures`, at most `width` of them in flight at once.
pub(crate) async fn run_all<F: Future>(futures: impl IntoIterator<Item = F>, width: usize) -> Vec<F::Output> {
    let mut waiting = futures.into_iter().enumerate();
    let mut running: Vec<(usize, Pin<Box<F>>)> = Vec::new();
    let mut done: Vec<(usize, F::Output)> = Vec::new();
    let width = width.max(1);
    std::future::poll_fn(|cx: &mut Context<'_>| {
        loop {
            while running.len() < width {
                let Some((index, future)) = waiting.next() else { break };
                running.push((index, Box::pin(future)));
            }
            if running.is_empty() {
                return Poll::Ready(());
            }
            let mut finished = false;
            let mut at = 0;
            while at < running.len() {
                if let Poll::Ready(output) = running[at].1.as_mut().poll(cx) {
                    let (index, _) = running.swap_remove(at);
                    done.push((index, output));
                    finished = true;
                } else {
                    at += 1;
                }
            }
            if !finished {
                return Poll::Pending;
            }
        }
    })
    .await;
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, output)| output).collect()
}

#[cfg(test)]
mod tests {
    use super::run_all;

    #[tokio::test]
    async fn all_results_in_order() {
        let futures = (0..20u64).map(|i| async move {
            tokio::time::sleep(std::time::Duration::from_millis(20 - i)).await;
            i
        });
        assert_eq!(run_all(futures, 4).await, (0..20).collect::<Vec<_>>());
        assert!(run_all(std::iter::empty::<std::future::Ready<u8>>(), 4).await.is_empty());
    }
}
