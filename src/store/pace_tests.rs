//! The pacer's decisions, from readings alone.

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

fn batch(took: u64) -> Signals {
    Signals {
        took: ms(took),
        wal_bytes: None,
    }
}

/// A probing pacer (ratio 4, slow above 1.5 × its idle tail) calibrated at an idle tail of 2 ms.
fn calibrated() -> Pacer {
    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    let mut idle = vec![ms(2); 24];
    idle.push(ms(40));
    p.calibrate(&idle);
    p
}

/// Records a batch that produced `s` and returns the rest after it.
fn rest_after(p: &mut Pacer, s: Signals) -> Duration {
    p.record(s);
    p.rest()
}

fn close(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) < Duration::from_micros(50)
}

#[test]
fn a_probing_purge_starts_stretched_and_earns_its_pace() {
    let mut p = calibrated();
    assert_eq!(p.batch(), 200);
    // 20 ms × 4 × 8 at the start.
    assert!(close(rest_after(&mut p, batch(20)), ms(640)));
    // Each quiet reading takes back a QUIET_PER_SLOW-th of a doubling: that many halve the stretch.
    for _ in 0..QUIET_PER_SLOW {
        p.probed(ms(2));
    }
    assert!(close(p.rest(), ms(320)), "{:?}", p.rest());
    for _ in 0..2 * QUIET_PER_SLOW {
        p.probed(ms(2));
    }
    assert!(close(p.rest(), ms(80)), "{:?}", p.rest());
    // Never below the ratio's floor, however quiet.
    for _ in 0..1000 {
        p.probed(ms(2));
    }
    assert_eq!(p.rest(), ms(80));
    assert_eq!(p.stats().slow_probes, 0);
    assert_eq!(p.stats().probes, u64::from(3 * QUIET_PER_SLOW) + 1000);
    assert_eq!(p.stats().largest_stretch, 8);
}

#[test]
fn each_slow_reading_doubles_the_rest_up_to_the_cap() {
    let mut p = calibrated();
    for _ in 0..3 * QUIET_PER_SLOW {
        p.probed(ms(2));
    }
    assert!(close(rest_after(&mut p, batch(20)), ms(80)));
    // Slow: over 1.5 × 2 ms.
    p.probed(ms(4));
    assert!(close(p.rest(), ms(160)), "{:?}", p.rest());
    p.probed(ms(4));
    assert!(close(p.rest(), ms(320)), "{:?}", p.rest());
    for _ in 0..10 {
        p.probed(ms(4));
    }
    // The stretch stops at 64: 20 ms × 4 × 64.
    assert!(close(p.rest(), ms(5120)), "{:?}", p.rest());
    assert_eq!(p.stats().slow_probes, 12);
    assert_eq!(p.stats().largest_stretch, 64);
    // And the rest at 10 s, whatever the batch took.
    assert_eq!(rest_after(&mut p, batch(500)), MAX_PACED_REST);
}

#[test]
fn one_slow_reading_in_two_hundred_holds_the_stretch_where_it_is() {
    let mut p = calibrated();
    p.record(batch(20));
    let before = p.rest();
    for _ in 0..5 {
        p.probed(ms(10));
        for _ in 0..QUIET_PER_SLOW {
            p.probed(ms(2));
        }
    }
    assert!(close(p.rest(), before), "{:?} against {before:?}", p.rest());
}

#[test]
fn a_probe_that_waited_counts_for_every_probe_it_stood_for() {
    let mut p = calibrated();
    for _ in 0..3 * QUIET_PER_SLOW {
        p.probed(ms(2));
    }
    p.record(batch(20));
    // 130 ms: the probes of 0, 40, 80 and 120 ms would all have been slow.
    p.probed(ms(130));
    assert_eq!(p.stats().slow_probes, 4);
    assert!(close(p.rest(), ms(80 * 16)), "{:?}", p.rest());
}

#[test]
fn a_stall_during_the_rest_lengthens_it() {
    let mut p = calibrated();
    let first = rest_after(&mut p, batch(20));
    p.probed(ms(9));
    assert!(p.rest() > first, "{:?} after {first:?}", p.rest());
}

#[test]
fn the_idle_tail_is_the_second_slowest_calibration_probe_and_at_least_the_floor() {
    let p = calibrated();
    assert_eq!(p.stats().baseline, Some(ms(2)));
    assert_eq!(p.slow_above(), Some(ms(3)));
    assert!(!p.overdue(ms(3)));
    assert!(p.overdue(ms(4)));

    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    p.calibrate(&[Duration::from_micros(100); CALIBRATION_PROBES]);
    assert_eq!(p.slow_above(), Some(MIN_BASELINE.mul_f64(1.5)));
    // 2.5 ms is 25 × the idle time but under 1.5 × 2 ms: quiet.
    p.record(batch(20));
    let before = p.rest();
    p.probed(Duration::from_micros(2500));
    assert!(p.rest() < before);
    assert_eq!(p.stats().slow_probes, 0);
}

#[test]
fn a_stall_while_calibrating_is_not_the_idle_tail() {
    // 98 probes near 0.8 ms and two caught in a stall: the tail is four times the median.
    let mut idle = vec![Duration::from_micros(800); 98];
    idle.extend([ms(7), ms(9)]);
    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    p.calibrate(&idle);
    assert_eq!(p.stats().baseline, Some(Duration::from_micros(3200)));
    assert_eq!(p.slow_above(), Some(Duration::from_micros(4800)));
    // A tail within four times the median is kept as it is.
    let mut idle = vec![Duration::from_micros(800); 98];
    idle.extend([Duration::from_micros(2500), Duration::from_micros(2600)]);
    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    p.calibrate(&idle);
    assert_eq!(p.stats().baseline, Some(Duration::from_micros(2500)));
}

#[test]
fn before_the_calibration_readings_count_for_nothing() {
    let mut p = Pacer::new(&policy(200, 4.0, 1.5, 0));
    assert!(p.probes());
    assert!(!p.overdue(ms(1000)));
    p.probed(ms(1000));
    assert_eq!(p.stats().probes, 0);
    assert_eq!(p.stats().slow_probes, 0);
    // No calibration readings (a probe failed): the ratio alone, nothing reads.
    p.calibrate(&[]);
    assert_eq!(p.slow_above(), None);
    assert_eq!(rest_after(&mut p, batch(20)), ms(80));
}

#[test]
fn without_a_target_only_the_ratio_paces() {
    let mut p = Pacer::new(&policy(200, 4.0, 0.0, 0));
    assert!(!p.probes());
    p.calibrate(&[ms(2); CALIBRATION_PROBES]);
    assert_eq!(p.slow_above(), None);
    assert_eq!(rest_after(&mut p, batch(20)), ms(80));
    p.probed(ms(100));
    assert_eq!(p.rest(), ms(80));
    assert_eq!(p.stats().slow_probes, 0);
    assert_eq!(p.stats().largest_stretch, 1);
}

#[test]
fn with_a_ratio_of_zero_a_stretch_still_rests() {
    let mut p = Pacer::new(&policy(200, 0.0, 1.5, 0));
    p.calibrate(&[ms(2); CALIBRATION_PROBES]);
    // 20 ms × 1 × 8 at the start.
    assert!(close(rest_after(&mut p, batch(20)), ms(160)));
    for _ in 0..3 * QUIET_PER_SLOW {
        p.probed(ms(2));
    }
    assert_eq!(p.rest(), Duration::ZERO);
}

#[test]
fn the_wal_budget_sets_the_rest_when_it_is_the_longest() {
    // 8 MB of WAL against 4 MB/s: the batch and its rest must span 2 s.
    let mut p = Pacer::new(&policy(200, 4.0, 0.0, 4_000_000));
    let rest = rest_after(
        &mut p,
        Signals {
            took: ms(500),
            wal_bytes: Some(8_000_000),
        },
    );
    assert_eq!(rest, ms(1500));
    // Little WAL: the ratio's floor wins.
    let rest = rest_after(
        &mut p,
        Signals {
            took: ms(20),
            wal_bytes: Some(4_000),
        },
    );
    assert_eq!(rest, ms(80));
    // No reading: no budget applied.
    assert_eq!(rest_after(&mut p, batch(20)), ms(80));
}

#[test]
fn nonsense_settings_fall_back_to_no_pacing() {
    let mut p = Pacer::new(&policy(0, f64::NAN, f64::NAN, 0));
    p.calibrate(&[ms(1)]);
    assert!(!p.probes());
    p.probed(ms(100));
    assert_eq!(p.batch(), 1);
    assert_eq!(rest_after(&mut p, batch(20)), Duration::ZERO);
}

fn batch_wrote(took: u64, wal_bytes: u64) -> Signals {
    Signals {
        took: ms(took),
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
    let rest = rest_after(&mut p, batch_wrote(500, 2_500_000));
    assert!(rest.abs_diff(ms(1500)) < ms(1), "{rest:?}");
    assert_eq!(p.stats().own_wal, 2_000_000);
    // Windows too short to tell are ignored; the traffic alone never makes the purge rest.
    p.traffic_wal(50_000_000, ms(5));
    assert_eq!(
        rest_after(&mut p, batch_wrote(500, 400_000)),
        Duration::ZERO
    );
    assert!(!Pacer::new(&policy(200, 0.0, 0.0, 0)).reads_wal());
}
