//! The limit on failed sign-ins, per account and per address.
//!
//! After `account_failures` failed sign-ins (or enrolments) within `window_ms`, an account is
//! locked for `lockout_ms`: every attempt, with the right password or not, is refused with 429
//! and the time it can try again. An address gets a larger allowance (a commune office puts
//! many enumerators behind one address) and is locked the same way. A success clears the
//! account's count. The counts live in memory: a restart forgives, which is acceptable for a
//! limit whose purpose is to make guessing slow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The limits; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    pub account_failures: u32,
    pub address_failures: u32,
    pub window_ms: i64,
    pub lockout_ms: i64,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            account_failures: 5,
            address_failures: 20,
            window_ms: 15 * 60 * 1000,
            lockout_ms: 15 * 60 * 1000,
        }
    }
}

/// What is locked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Account(String),
    Address(IpAddr),
}

/// A lock in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub subject: Subject,
    pub until_ms: i64,
}

#[derive(Clone, Copy, Debug)]
struct Count {
    failures: u32,
    first_ms: i64,
    locked_until: Option<i64>,
}

/// Entries kept before stale ones are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug)]
pub struct Throttle {
    limits: LoginLimits,
    counts: Mutex<HashMap<Subject, Count>>,
}

impl Throttle {
    pub fn new(limits: LoginLimits) -> Throttle {
        Throttle {
            limits,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, Count>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subjects(account: &str, address: Option<IpAddr>) -> Vec<Subject> {
        let mut out = vec![Subject::Account(account.to_string())];
        out.extend(address.map(Subject::Address));
        out
    }

    /// The lock that refuses an attempt now, the one lasting longest if both are locked.
    pub fn check(&self, account: &str, address: Option<IpAddr>, now_ms: i64) -> Option<Lock> {
        let counts = self.counts();
        Throttle::subjects(account, address)
            .into_iter()
            .filter_map(|subject| {
                let until = counts.get(&subject)?.locked_until?;
                (until > now_ms).then_some(Lock {
                    subject,
                    until_ms: until,
                })
            })
            .max_by_key(|lock| lock.until_ms)
    }

    /// Counts a failed attempt; returns the locks it started.
    pub fn failed(&self, account: &str, address: Option<IpAddr>, now_ms: i64) -> Vec<Lock> {
        let limits = self.limits;
        let mut counts = self.counts();
        if counts.len() >= SWEEP_AT {
            counts.retain(|_, count| {
                count.locked_until.is_some_and(|until| until > now_ms)
                    || now_ms - count.first_ms < limits.window_ms
            });
        }
        let mut started = Vec::new();
        for subject in Throttle::subjects(account, address) {
            let limit = match subject {
                Subject::Account(_) => limits.account_failures,
                Subject::Address(_) => limits.address_failures,
            };
            let count = counts.entry(subject.clone()).or_insert(Count {
                failures: 0,
                first_ms: now_ms,
                locked_until: None,
            });
            let lock_over = count.locked_until.is_some_and(|until| until <= now_ms);
            if lock_over || now_ms - count.first_ms >= limits.window_ms {
                *count = Count {
                    failures: 0,
                    first_ms: now_ms,
                    locked_until: None,
                };
            }
            if count.locked_until.is_some() {
                continue;
            }
            count.failures += 1;
            if count.failures >= limit {
                let until_ms = now_ms.saturating_add(limits.lockout_ms);
                count.locked_until = Some(until_ms);
                started.push(Lock { subject, until_ms });
            }
        }
        started
    }

    /// Clears the account's count after a successful sign-in.
    pub fn succeeded(&self, account: &str) {
        self.counts().remove(&Subject::Account(account.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fifth_failure_locks_the_account_until_the_lockout_ends() {
        let throttle = Throttle::new(LoginLimits::default());
        let address: IpAddr = [10, 0, 0, 1].into();
        for n in 0..4 {
            assert!(throttle.failed("lan", Some(address), n).is_empty());
            assert_eq!(throttle.check("lan", Some(address), n), None);
        }
        let started = throttle.failed("lan", Some(address), 10);
        let until = 10 + 15 * 60 * 1000;
        assert_eq!(
            started,
            vec![Lock {
                subject: Subject::Account("lan".into()),
                until_ms: until
            }]
        );
        assert_eq!(
            throttle.check("lan", None, until - 1).map(|l| l.until_ms),
            Some(until)
        );
        assert_eq!(throttle.check("minh", Some(address), 11), None);
        assert_eq!(throttle.check("lan", None, until), None);
        // After the lockout the count starts again.
        assert!(throttle.failed("lan", None, until).is_empty());
    }

    #[test]
    fn an_address_is_locked_after_its_own_allowance_and_success_clears_the_account() {
        let limits = LoginLimits::default();
        let throttle = Throttle::new(limits);
        let address: IpAddr = [10, 0, 0, 2].into();
        for n in 0..limits.address_failures - 1 {
            throttle.failed(&format!("user{n}"), Some(address), 1);
        }
        let started = throttle.failed("last", Some(address), 2);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].subject, Subject::Address(address));
        assert!(throttle.check("anyone", Some(address), 3).is_some());

        for _ in 0..4 {
            throttle.failed("lan", None, 5);
        }
        throttle.succeeded("lan");
        for _ in 0..4 {
            assert!(throttle.failed("lan", None, 6).is_empty());
        }
        // Failures older than the window are forgotten.
        assert!(throttle
            .failed("lan", None, 6 + limits.window_ms)
            .is_empty());
    }
}
