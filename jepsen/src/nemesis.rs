//! The fault schedule: one fault at a time, each held 1.5–5.5 s and healed
//! before the next, 1–3 s apart, so a majority is usually up and the
//! clients make progress. Which faults, victims and holds come from the
//! seed.

use std::time::{Duration, Instant};

use crate::history::History;
use crate::procs::ProcCluster;
use crate::{Options, Rng};

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    KillAll,
    Pause,
    Cut,
    BlackHole,
}

/// Runs faults for `opts.seconds`.
pub fn run(cluster: &mut ProcCluster, opts: &Options, history: &History) {
    let f = opts.faults;
    let mut menu = Vec::new();
    if f.kills {
        menu.extend([Fault::Kill, Fault::Kill, Fault::KillAll]);
    }
    if f.pauses {
        menu.extend([Fault::Pause, Fault::Pause]);
    }
    if f.partitions {
        menu.extend([Fault::Cut, Fault::BlackHole, Fault::BlackHole]);
    }
    let mut rng = Rng::new(opts.seed);
    let end = Instant::now() + Duration::from_secs(opts.seconds);
    std::thread::sleep(Duration::from_millis(500));
    while Instant::now() < end {
        let hold = Duration::from_millis(rng.range(1500, 5500));
        let gap = Duration::from_millis(rng.range(1000, 3000));
        let victim = rng.range(1, 4);
        let Some(fault) = (!menu.is_empty()).then(|| menu[rng.range(0, menu.len() as u64) as usize]) else {
            std::thread::sleep(hold + gap);
            continue;
        };
        match fault {
            Fault::Kill => {
                history.fault(format!("kill -9 n{victim}"));
                cluster.node(victim).kill9();
                std::thread::sleep(hold);
                if let Err(e) = cluster.node(victim).start() {
                    history.fault(format!("restart of n{victim} failed: {e}"));
                }
            }
            Fault::KillAll => {
                history.fault("kill -9 all".into());
                for id in 1..=3 {
                    cluster.node(id).kill9();
                }
                for id in 1..=3 {
                    if let Err(e) = cluster.node(id).start() {
                        history.fault(format!("restart of n{id} failed: {e}"));
                    }
                }
            }
            Fault::Pause => {
                history.fault(format!("pause n{victim}"));
                cluster.node(victim).pause();
                std::thread::sleep(hold);
                cluster.node(victim).resume();
            }
            Fault::Cut => {
                history.fault(format!("cut n{victim}"));
                cluster.partition(&[victim]);
                std::thread::sleep(hold);
                cluster.heal();
            }
            Fault::BlackHole => {
                history.fault(format!("black-hole n{victim}"));
                cluster.blackhole(&[victim]);
                std::thread::sleep(hold);
                cluster.heal();
            }
        }
        history.faults_injected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(gap);
    }
}
