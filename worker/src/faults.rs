//! Faults injected on purpose, for tests and drills: the seam through which the chaos
//! suite makes a job fail or hang. Read once, when a command starts
//! ([`Faults::from_env`], from `WF_FAULT_FAIL_JOBS` and `WF_FAULT_HANG_JOBS`), and passed
//! down as a value; absent (`None`) in production, where no code path reads the
//! environment for them.

/// What a job is made to do instead of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail at once (retryably on a worker; a live retrain's error in process).
    Fail,
    /// Never finish: heartbeat until shutdown (a hung job).
    Hang,
}

/// Job-key prefixes whose jobs fail or hang.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    pub fail_jobs: Option<String>,
    pub hang_jobs: Option<String>,
}

impl Faults {
    /// The faults the environment asks for; `None` when it asks for none. A variable set
    /// to the empty string is kept: it names every job here, and none on a worker
    /// ([`Faults::on_workers`]), as each path read it before the seam.
    pub fn from_env() -> Option<Faults> {
        Faults {
            fail_jobs: std::env::var("WF_FAULT_FAIL_JOBS").ok(),
            hang_jobs: std::env::var("WF_FAULT_HANG_JOBS").ok(),
        }
        .any()
    }

    /// These faults as a worker applies them: an empty prefix names no job. `None` when
    /// none is left.
    pub fn on_workers(self) -> Option<Faults> {
        let kept = |prefix: Option<String>| prefix.filter(|p| !p.is_empty());
        Faults { fail_jobs: kept(self.fail_jobs), hang_jobs: kept(self.hang_jobs) }.any()
    }

    /// `self`, or `None` when it names no prefix.
    fn any(self) -> Option<Faults> {
        (self.fail_jobs.is_some() || self.hang_jobs.is_some()).then_some(self)
    }

    /// The fault of the job whose key (in full, hexadecimal) is `key`, if any: the first
    /// prefix it starts with (an empty one names every job); failing wins over hanging.
    pub fn for_job(&self, key: &str) -> Option<Fault> {
        let matches = |prefix: &Option<String>| prefix.as_ref().is_some_and(|p| key.starts_with(p.as_str()));
        if matches(&self.fail_jobs) {
            Some(Fault::Fail)
        } else if matches(&self.hang_jobs) {
            Some(Fault::Hang)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_fails_or_hangs_only_by_its_keys_prefix() {
        let faults = Faults { fail_jobs: Some("ab".into()), hang_jobs: Some("a".into()) };
        assert_eq!(faults.for_job("abc"), Some(Fault::Fail));
        assert_eq!(faults.for_job("a0"), Some(Fault::Hang));
        assert_eq!(faults.for_job("b0"), None);
        assert_eq!(Faults::default().for_job("abc"), None);
    }

    #[test]
    fn an_empty_prefix_names_every_job_in_process_and_none_on_workers() {
        let every = Faults { fail_jobs: Some(String::new()), hang_jobs: None };
        assert_eq!(every.for_job("abc"), Some(Fault::Fail));
        assert_eq!(every.clone().on_workers(), None);
        let both = Faults { fail_jobs: Some(String::new()), hang_jobs: Some("c".into()) };
        assert_eq!(both.on_workers(), Some(Faults { fail_jobs: None, hang_jobs: Some("c".into()) }));
    }
}
