//! The pacer's decisions, from signals alone.

use super::*;

fn policy(batch: u32, pause_ratio: f64, target_slowdown: f64, max_wal_rate: u64) -> ExpirePolicy {
    ExpirePolicy {
        batch_size: batch,
        pause_ratio,
        target_slowdown,
        max_wal_rate,
        ..ExpirePolicy::default()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn signals(took: u64, probe: Option<u64>) -> Signals {
    Signals {
        took: ms(took),
        probe: probe.map(ms),
        wal_bytes: None,
    }
}

#[test]
fn a_quiet_probe_keeps_the_batch_and_the_ratio_floor() {
    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    p.set_baseline(Some(ms(2)));
    for _ in 0..5 {
        let step = p.next(signals(20, Some(2)));
        assert_eq!(
            step,
            Step {
                batch: 200,
                rest: ms(80)
            }
        );
    }
    assert_eq!(p.stats().backoffs, 0);
    assert_eq!(p.stats().smallest_batch, 200);
    assert_eq!(p.stats().rested, ms(400));
}

#[test]
fn a_slow_probe_halves_the_batch_and_doubles_the_rest_each_time() {
    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    p.set_baseline(Some(ms(2)));
    // 4 ms > 1.5 × 2 ms: congested.
    assert_eq!(
        p.next(signals(20, Some(4))),
        Step {
            batch: 100,
            rest: ms(160)
        }
    );
    assert_eq!(
        p.next(signals(20, Some(4))),
        Step {
            batch: 50,
            rest: ms(320)
        }
    );
    assert_eq!(
        p.next(signals(20, Some(4))),
        Step {
            batch: 25,
            rest: ms(640)
        }
    );
    assert_eq!(
        p.next(signals(20, Some(4))),
        Step {
            batch: 12,
            rest: ms(1280)
        }
    );
    // Never below the smallest batch.
    assert_eq!(p.next(signals(20, Some(4))).batch, MIN_PACED_BATCH);
    assert_eq!(p.next(signals(20, Some(4))).batch, MIN_PACED_BATCH);
    assert_eq!(p.stats().backoffs, 6);
    assert_eq!(p.stats().smallest_batch, MIN_PACED_BATCH);
}

#[test]
fn after_a_back_off_the_batch_grows_back_by_a_tenth_and_the_rest_shrinks_slowly() {
    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    p.set_baseline(Some(ms(2)));
    p.next(signals(20, Some(10))); // 100, stretch 2
    p.next(signals(20, Some(10))); // 50, stretch 4
                                   // Quiet again: +20 rows a batch, the stretch 4 → 3.5 → 3 → …
    assert_eq!(
        p.next(signals(20, Some(2))),
        Step {
            batch: 70,
            rest: ms(280)
        }
    );
    assert_eq!(
        p.next(signals(20, Some(2))),
        Step {
            batch: 90,
            rest: ms(240)
        }
    );
    let mut last = Step {
        batch: 0,
        rest: Duration::ZERO,
    };
    for _ in 0..20 {
        last = p.next(signals(20, Some(2)));
    }
    assert_eq!(
        last,
        Step {
            batch: 200,
            rest: ms(80)
        },
        "back to the configured pace"
    );
}

#[test]
fn the_rest_is_capped_and_the_stretch_too() {
    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    p.set_baseline(Some(ms(2)));
    for _ in 0..20 {
        let step = p.next(signals(500, Some(50)));
        assert!(step.rest <= MAX_PACED_REST);
    }
    assert_eq!(p.next(signals(500, Some(50))).rest, MAX_PACED_REST);
    // A stretch capped at 64: thirteen quiet batches bring it to 57.5 (1 ms × 4 × 57.5), not
    // from 2^21.
    for _ in 0..12 {
        p.next(signals(1, Some(1)));
    }
    let rest = p.next(signals(1, Some(1))).rest;
    assert!(
        rest.abs_diff(ms(230)) < Duration::from_micros(1),
        "{rest:?}"
    );
}

#[test]
fn tiny_baselines_count_as_one_millisecond() {
    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    p.set_baseline(Some(Duration::from_micros(100)));
    // 1.2 ms is 12 × the baseline but under 1.5 × 1 ms: not congested.
    let step = p.next(Signals {
        took: ms(20),
        probe: Some(Duration::from_micros(1200)),
        wal_bytes: None,
    });
    assert_eq!(step.batch, 200);
    assert_eq!(p.stats().backoffs, 0);
}

#[test]
fn without_a_target_or_a_baseline_or_a_probe_only_the_ratio_paces() {
    for (target, baseline, probe) in [
        (0.0, Some(2), Some(100)),
        (1.5, None, Some(100)),
        (1.5, Some(2), None),
    ] {
        let mut p = Pacer::new(&policy(200, 4.0, target, 0));
        p.set_baseline(baseline.map(ms));
        assert_eq!(
            p.next(signals(20, probe)),
            Step {
                batch: 200,
                rest: ms(80)
            }
        );
        assert_eq!(p.stats().backoffs, 0);
    }
    assert!(!Pacer::new(&policy(200, 4.0, 0.0, 0)).probes());
}

#[test]
fn with_a_ratio_of_zero_a_back_off_still_rests() {
    let mut p = Pacer::new(&policy(200, 0.0, 1.5, 0));
    p.set_baseline(Some(ms(2)));
    assert_eq!(p.next(signals(20, Some(2))).rest, Duration::ZERO);
    assert_eq!(p.next(signals(20, Some(9))).rest, ms(40));
}

#[test]
fn the_wal_budget_sets_the_rest_when_it_is_the_longest() {
    // 8 MB of WAL against 4 MB/s: the batch and its rest must span 2 s.
    let mut p = Pacer::new(&policy(200, 4.0, 0.0, 4_000_000));
    let step = p.next(Signals {
        took: ms(500),
        probe: None,
        wal_bytes: Some(8_000_000),
    });
    assert_eq!(step.rest, ms(1500));
    // Little WAL: the ratio's floor wins.
    let step = p.next(Signals {
        took: ms(20),
        probe: None,
        wal_bytes: Some(4_000),
    });
    assert_eq!(step.rest, ms(80));
    // No reading: no budget applied.
    let step = p.next(signals(20, None));
    assert_eq!(step.rest, ms(80));
}

#[test]
fn nonsense_settings_fall_back_to_no_pacing() {
    let mut p = Pacer::new(&policy(0, f64::NAN, f64::NAN, 0));
    p.set_baseline(Some(ms(1)));
    assert!(!p.probes());
    assert_eq!(
        p.next(signals(20, Some(100))),
        Step {
            batch: 1,
            rest: Duration::ZERO
        }
    );
}

#[test]
fn one_slow_probe_in_three_moves_the_mean() {
    assert_eq!(mean(&[ms(1), ms(1), ms(40)]), Some(ms(14)));
    assert_eq!(mean(&[]), None);
}

fn batch_wrote(took: u64, wal_bytes: u64) -> Signals {
    Signals {
        took: ms(took),
        probe: None,
        wal_bytes: Some(wal_bytes),
    }
}

#[test]
fn the_traffics_wal_read_during_the_rests_is_not_counted_as_the_purges() {
    // 1 MB/s of the purge's own WAL allowed; the traffic writes 1 MB/s by itself.
    let mut p = Pacer::new(&policy(200, 0.0, 0.0, 1_000_000));
    assert!(p.reads_wal());
    p.traffic_wal(1_000_000, ms(1000));
    // 2.5 MB during a batch of 500 ms: 0.5 MB of it the traffic's, 2 MB the purge's, which
    // the budget spreads over 2 s: 1.5 s of rest after the batch.
    let step = p.next(batch_wrote(500, 2_500_000));
    assert!(step.rest.abs_diff(ms(1500)) < ms(1), "{:?}", step.rest);
    assert_eq!(p.stats().own_wal, 2_000_000);
    // Windows too short to tell are ignored; the traffic alone never makes the purge rest.
    p.traffic_wal(50_000_000, ms(5));
    let step = p.next(batch_wrote(500, 400_000));
    assert_eq!(step.rest, Duration::ZERO);
    assert!(!Pacer::new(&policy(200, 0.0, 0.0, 0)).reads_wal());
}
