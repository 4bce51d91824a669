//! How a tick's restarts run side by side: a thread per restart (up to
//! [`RESTART_THREADS`]), of which at most [`SPAWNS_AT_ONCE`] spawn at a
//! time. A spawn waits for its wrapper's PID file (a hanging wrapper holds
//! one spawn permit for the spawn wait, and nothing else); the half-second
//! watch of a worker just started holds only its own thread, so 200 dead
//! streams are watched side by side rather than eight at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::{Acted, Actor, Observed};
use crate::supervise::plan::RestartOrder;

/// Spawns (fork, exec, wait for the PID file) under way at once.
pub const SPAWNS_AT_ONCE: usize = 8;
/// Threads carrying out restarts at once; most of them only watch a worker
/// that has just started.
pub const RESTART_THREADS: usize = 256;

/// A counting semaphore: at most `n` holders at once.
#[derive(Debug)]
pub struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One permit, given back when dropped.
pub struct Permit<'a>(&'a Permits);

impl Permits {
    pub fn new(n: usize) -> Permits {
        Permits {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free permit.
    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// Runs the restarts, in the plan's order as far as threads are free.
pub fn restart_all(actor: &Actor<'_>, jobs: &[(&Observed, &RestartOrder)], acted: &mut Acted) {
    if jobs.len() <= 1 {
        for (obs, order) in jobs {
            actor.restart(obs, order, acted);
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.len().min(RESTART_THREADS) {
            // Small stacks: a restart thread spawns and watches, no more.
            let spawned = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(scope, || {
                    let mut mine = Acted::default();
                    while let Some((obs, order)) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) {
                        actor.restart(obs, order, &mut mine);
                    }
                    done.lock().unwrap_or_else(|e| e.into_inner()).push(mine);
                });
            // Out of threads: the ones running take the rest.
            if spawned.is_err() {
                break;
            }
        }
    });
    // No thread could be started at all: restart here, one by one.
    while let Some((obs, order)) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) {
        actor.restart(obs, order, acted);
    }
    for mine in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
        acted.spawned.extend(mine.spawned);
        acted.running.extend(mine.running);
        acted.gave_up.extend(mine.gave_up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// No more than the permits' number hold one at once, and every waiter
    /// gets one in the end.
    #[test]
    fn permits_bound_the_holders() {
        let permits = Arc::new(Permits::new(3));
        let holding = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let (permits, holding, most) = (permits.clone(), holding.clone(), most.clone());
                std::thread::spawn(move || {
                    let _permit = permits.acquire();
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    holding.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} held at once");
        assert_eq!(*permits.free.lock().unwrap(), 3);
    }
}
