//! Where a GPU task goes: the rule over the devices' figures (health,
//! memory, load), apart from the devices themselves so that it is tested
//! on plain data, without a GPU.
//!
//! - A device whose context faulted ([`Figures::healthy`] false) gets no
//!   task: `Any` and `Spread` pass over it, and a task bound to it
//!   (`One`) or with no healthy device left is [`Pick::Faulted`].
//! - A memory request goes only to a healthy device with that much
//!   available; where none has it now, the task waits if some healthy
//!   device is that large ([`Pick::Wait`]), and fails if none is
//!   ([`Pick::Never`]).
//! - `Any` takes the least loaded device, the most available memory among
//!   equals; `Spread` takes the next device in turn that fits.

use super::DeviceChoice;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What placement reads of a device.
pub(crate) trait Figures {
    /// The driver's ordinal.
    fn ordinal(&self) -> usize;
    /// Whether it may take tasks (its context has not faulted).
    fn healthy(&self) -> bool;
    /// Memory free now, less what placed tasks reserved, in bytes.
    fn available(&self) -> u64;
    /// Its memory, in bytes.
    fn total(&self) -> u64;
    /// Queued and running tasks, scaled by its stream count.
    fn load(&self) -> usize;
}

/// Where a task goes, by index into the devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// To this device now.
    Go(usize),
    /// Nowhere now: wait for memory; the most available on a candidate.
    Wait(u64),
    /// Nowhere ever: no candidate is that large; the most available.
    Never(u64),
    /// Nowhere: the device it is bound to, or every device, faulted (the
    /// index of the first faulted candidate).
    Faulted(usize),
}

/// Where a task of `choice` asking for `memory` bytes goes among
/// `devices`; `turn` is the next device in turn for `Spread`.
pub(crate) fn pick<D: Figures>(
    devices: &[D],
    choice: DeviceChoice,
    memory: u64,
    turn: &AtomicUsize,
) -> Pick {
    let n = devices.len();
    let fits = |d: &D| d.healthy() && (memory == 0 || memory <= d.available());
    // The candidates, as a range of indices: no allocation per task.
    let (lo, hi) = match choice {
        DeviceChoice::One(o) => match devices.iter().position(|d| d.ordinal() == o) {
            Some(i) => (i, i + 1),
            None => (0, 0),
        },
        _ => (0, n),
    };
    let chosen = match choice {
        DeviceChoice::Spread if n > 0 => {
            let start = turn.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|k| (start + k) % n).find(|&i| fits(&devices[i]))
        }
        _ => (lo..hi).filter(|&i| fits(&devices[i])).min_by_key(|&i| {
            let d = &devices[i];
            (d.load(), std::cmp::Reverse(d.available()))
        }),
    };
    if let Some(i) = chosen {
        return Pick::Go(i);
    }
    let healthy = || (lo..hi).filter(|&i| devices[i].healthy());
    if healthy().next().is_none() && lo < hi {
        return Pick::Faulted(lo);
    }
    let most_free = healthy().map(|i| devices[i].available()).max().unwrap_or(0);
    if healthy().any(|i| devices[i].total() >= memory) {
        Pick::Wait(most_free)
    } else {
        Pick::Never(most_free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device as plain figures.
    #[derive(Debug, Clone, Copy)]
    struct Dev {
        ordinal: usize,
        healthy: bool,
        available: u64,
        total: u64,
        load: usize,
    }

    impl Figures for Dev {
        fn ordinal(&self) -> usize {
            self.ordinal
        }
        fn healthy(&self) -> bool {
            self.healthy
        }
        fn available(&self) -> u64 {
            self.available
        }
        fn total(&self) -> u64 {
            self.total
        }
        fn load(&self) -> usize {
            self.load
        }
    }

    fn dev(ordinal: usize, available: u64, load: usize) -> Dev {
        Dev {
            ordinal,
            healthy: true,
            available,
            total: 100,
            load,
        }
    }

    fn faulted(mut d: Dev) -> Dev {
        d.healthy = false;
        d
    }

    #[test]
    fn any_takes_the_least_loaded_then_the_most_free() {
        let turn = AtomicUsize::new(0);
        let devs = [dev(0, 50, 2), dev(1, 10, 1), dev(2, 90, 1)];
        assert_eq!(pick(&devs, DeviceChoice::Any, 0, &turn), Pick::Go(2));
        // A request that the least loaded cannot hold goes to one that can.
        let devs = [dev(0, 50, 2), dev(1, 10, 1)];
        assert_eq!(pick(&devs, DeviceChoice::Any, 20, &turn), Pick::Go(0));
    }

    #[test]
    fn a_faulted_device_gets_no_task_from_any_or_spread() {
        let turn = AtomicUsize::new(0);
        // The faulted device is the least loaded and the most free.
        let devs = [faulted(dev(0, 100, 0)), dev(1, 10, 5)];
        assert_eq!(pick(&devs, DeviceChoice::Any, 0, &turn), Pick::Go(1));
        for _ in 0..4 {
            assert_eq!(pick(&devs, DeviceChoice::Spread, 0, &turn), Pick::Go(1));
        }
        // Memory on the faulted device counts for nothing: the request
        // waits for the healthy one, or fails where it is too small.
        assert_eq!(pick(&devs, DeviceChoice::Any, 50, &turn), Pick::Wait(10));
        let small = [
            faulted(dev(0, 100, 0)),
            Dev {
                total: 20,
                ..dev(1, 10, 0)
            },
        ];
        assert_eq!(pick(&small, DeviceChoice::Any, 50, &turn), Pick::Never(10));
    }

    #[test]
    fn a_task_bound_to_a_faulted_device_or_with_none_healthy_is_faulted() {
        let turn = AtomicUsize::new(0);
        let devs = [dev(0, 100, 0), faulted(dev(3, 100, 0))];
        assert_eq!(
            pick(&devs, DeviceChoice::One(3), 0, &turn),
            Pick::Faulted(1)
        );
        assert_eq!(
            pick(&devs, DeviceChoice::One(3), 10, &turn),
            Pick::Faulted(1)
        );
        assert_eq!(pick(&devs, DeviceChoice::One(0), 0, &turn), Pick::Go(0));
        let all = [faulted(dev(0, 100, 0)), faulted(dev(1, 100, 0))];
        for choice in [DeviceChoice::Any, DeviceChoice::Spread] {
            assert_eq!(pick(&all, choice, 0, &turn), Pick::Faulted(0));
            assert_eq!(pick(&all, choice, 10, &turn), Pick::Faulted(0));
        }
    }

    #[test]
    fn spread_goes_round_the_devices_that_fit() {
        let turn = AtomicUsize::new(0);
        let devs = [dev(0, 5, 9), dev(1, 50, 9), dev(2, 50, 0)];
        let got: Vec<Pick> = (0..4)
            .map(|_| pick(&devs, DeviceChoice::Spread, 0, &turn))
            .collect();
        assert_eq!(got, [Pick::Go(0), Pick::Go(1), Pick::Go(2), Pick::Go(0)]);
        // Device 0 cannot hold 10 bytes: its turns pass to the next.
        let turn = AtomicUsize::new(0);
        let got: Vec<Pick> = (0..3)
            .map(|_| pick(&devs, DeviceChoice::Spread, 10, &turn))
            .collect();
        assert_eq!(got, [Pick::Go(1), Pick::Go(1), Pick::Go(2)]);
    }

    #[test]
    fn memory_waits_where_a_device_is_large_enough_and_fails_where_none_is() {
        let turn = AtomicUsize::new(0);
        let devs = [dev(0, 30, 0), dev(1, 40, 0)];
        assert_eq!(pick(&devs, DeviceChoice::Any, 60, &turn), Pick::Wait(40));
        assert_eq!(pick(&devs, DeviceChoice::Any, 101, &turn), Pick::Never(40));
        assert_eq!(pick(&devs, DeviceChoice::One(0), 60, &turn), Pick::Wait(30));
        // An ordinal that is not there: nothing fits, nothing ever will.
        assert_eq!(pick(&devs, DeviceChoice::One(7), 0, &turn), Pick::Never(0));
        let none: [Dev; 0] = [];
        assert_eq!(pick(&none, DeviceChoice::Spread, 0, &turn), Pick::Never(0));
    }
}
