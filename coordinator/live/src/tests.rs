use super::*;

use candle_core::Device;
use wf_shared::plan::{Job, JobKey};

use std::sync::Arc;

use crate::files::{LiveFiles, MemoryFiles};
use crate::record::*;
use crate::store::*;
use crate::trainer::*;

/// A store of deployments' files in memory (the coordinator's tests run the artifact
/// store under these deployments, `wf_coordinator::deployments`).
fn files() -> Arc<dyn LiveFiles> {
    Arc::new(MemoryFiles::default())
}

const SPEC: &str = r#"name = "deployment-unit"
[dataset]
panel = "synth:stocks=30,days=400,seed=2"
[evaluation]
start = 2021-08-02
end = 2022-03-31
[plan]
train_windows = [126]
cadences = ["monthly"]
horizons = [1, 5]
primary_horizon = 5
max_age = 42
[metrics]
k = 10
bootstrap_samples = 20
bootstrap_seed = 1
[[models]]
name = "linear"
kind = "linear"
seeds = [0]
params = { epochs = 2 }
"#;

const LOCAL: LocalTrainer = LocalTrainer { device: Device::Cpu, faults: None };

/// Deployment `id` of the linear model on `SPEC`, retrained monthly from 2021-08-02.
fn monthly(id: &str) -> DeploymentRecord {
    DeploymentRecord {
        id: id.into(),
        spec: SPEC.into(),
        model: "linear".into(),
        window: 126,
        seed: 0,
        policy: "monthly".into(),
        from: chrono::NaiveDate::from_ymd_opt(2021, 8, 2).expect("date"),
        shadow_days: 0,
        tenant: local_tenant(),
    }
}

/// A deployment goes on deciding as days are appended to its panel file: past the
/// spec's `[evaluation] end` and past the panel it was deployed on, with the same
/// decisions, versions and switches as a deployment advanced on the longer panel in
/// one go (its retrains are training-only jobs, whose keys do not move as the panel
/// grows).
#[tokio::test]
async fn a_deployment_decides_past_the_specs_end_as_its_panel_grows() {
    use wf_shared::synth::{SynthSpec, generate};
    let start = chrono::NaiveDate::from_ymd_opt(2021, 1, 4).expect("date");
    let market = generate(&SynthSpec { stocks: 30, days: 400, start, seed: 2, null: false }).expect("market");
    let bars = wf_shared::Bars::new(market.bars).expect("bars");
    let spec = wf_shared::PanelSpec { horizons: vec![1, 5] };
    let long = wf_shared::build_panel(&bars, &spec);
    let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).expect("date");
    let cut = long.calendar().index_on_or_before(date(2022, 4, 20)).expect("day");
    let short = wf_shared::build_panel(&bars.truncated(cut), &spec);
    let dir = tempfile::tempdir().expect("dir");
    let files = files();
    let deployments = Deployments::new(files.clone());
    async fn deploy(
        deployments: &Deployments,
        dir: &std::path::Path,
        id: &str,
        panel: &wf_shared::Panel,
    ) -> std::path::PathBuf {
        let path = dir.join(format!("{id}.parquet"));
        wf_data::panel_file::write_panel(&path, panel).expect("panel written");
        let spec = SPEC.replace("synth:stocks=30,days=400,seed=2", &path.display().to_string());
        let record = DeploymentRecord {
            id: id.into(),
            spec,
            model: "linear".into(),
            window: 126,
            seed: 0,
            policy: "ΔP@K<0.02 over 21d or age>=42d".into(),
            from: chrono::NaiveDate::from_ymd_opt(2021, 8, 2).expect("date"),
            shadow_days: 0,
            tenant: local_tenant(),
        };
        deployments.deploy(record, &Device::Cpu).await.expect("deployed");
        deployments.advance(id, None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).await.expect("advanced");
        path
    }
    let grown = deploy(&deployments, dir.path(), "grown", &short).await;
    let before = deployments.state("grown").await.expect("read").expect("state");
    assert_eq!(before.next_day, cut + 1, "every day of the shorter panel processed");
    // A long-running predictor (a coordinator's) follows the panel file as it grows.
    let predictor = Predictor::new(Deployments::new(files.clone()), Device::Cpu);
    let date_of = |day: usize| long.calendar().date(day).expect("day").to_string();
    assert_eq!(predictor.predict("grown", None, Some(5)).await.expect("prediction").date, date_of(cut));
    // Decided after the spec's end, before the panel's.
    let end = long.calendar().index_on_or_before(date(2022, 3, 31)).expect("day");
    assert!(before.decisions.iter().any(|d| d.day > end), "no decision after the spec's end");

    // The panel file grows; the deployment goes on from its next day.
    wf_data::panel_file::write_panel(&grown, &long).expect("panel written");
    let days =
        deployments.advance("grown", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).await.expect("advanced").days;
    assert_eq!(days, long.calendar().len() - cut - 1);
    let after = deployments.state("grown").await.expect("read").expect("state");
    deploy(&deployments, dir.path(), "straight", &long).await;
    let straight = deployments.state("straight").await.expect("read").expect("state");
    assert!(after.decisions.iter().any(|d| d.day > cut), "no decision on the appended days");
    assert!(after.versions.iter().any(|v| v.retrain_day > cut), "no retrain on the appended days");
    assert_eq!(after.decisions, straight.decisions);
    assert_eq!(after.versions, straight.versions);
    assert_eq!(after.switches, straight.switches);
    assert_eq!(after.next_day, long.calendar().len());
    let latest = predictor.predict("grown", None, Some(5)).await.expect("a prediction on the grown panel");
    assert_eq!(latest.date, date_of(long.calendar().len() - 1));

    // A panel whose processed days changed (one feature value of a processed day
    // corrected) is refused, and the state is left as it was.
    let mut parts = long.into_parts();
    let row = parts.day.iter().position(|d| *d as usize == cut - 30).expect("a row");
    parts.features[0][row] += 0.5;
    let changed = wf_shared::Panel::new(parts).expect("panel");
    wf_data::panel_file::write_panel(&grown, &changed).expect("panel written");
    let refused =
        deployments.advance("grown", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).await.expect_err("refused");
    assert!(refused.to_string().contains("history changed"), "{refused}");
    assert_eq!(deployments.state("grown").await.expect("read").expect("state"), after);
}

/// A deployment whose retrains are trained elsewhere (the workers) stops before each
/// one until it is trained, with its state stored as of the last decision day before
/// it, and then goes on: in the end it decided exactly what a deployment trained in
/// process decided, and no day was decided twice or skipped.
#[tokio::test]
async fn an_advance_waits_for_retrains_trained_elsewhere_and_decides_the_same() {
    /// Answers "being trained" at the first ask for each job, the model at the next.
    struct Elsewhere(std::sync::Mutex<std::collections::BTreeSet<JobKey>>);
    #[async_trait::async_trait]
    impl Retrainer for Elsewhere {
        async fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>> {
            if self.0.lock().expect("lock").insert(job.key) {
                return Ok(None);
            }
            LOCAL.model_file(opened, job).await
        }
    }
    let files = files();
    let deployments = Deployments::new(files.clone());
    for id in ["here", "elsewhere"] {
        deployments.deploy(monthly(id), &Device::Cpu).await.expect("deployed");
    }
    let here = deployments.advance("here", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).await.expect("advanced");
    assert!(here.waiting.is_none());
    let here_days = here.days;
    let trainer = Elsewhere(Default::default());
    let mut waits = 0;
    let mut days = 0;
    loop {
        let before = deployments.state("elsewhere").await.expect("read").expect("state");
        let mut seen = Vec::new();
        let advanced = deployments
            .advance("elsewhere", None, &Device::Cpu, &trainer, &mut |_, day, _| seen.push(day))
            .await
            .expect("advanced");
        let stored = deployments.state("elsewhere").await.expect("read").expect("state");
        let returned = advanced.opened.state.as_ref().expect("state");
        assert_eq!((returned.next_day, returned.revision), (stored.next_day, stored.revision), "returned != stored");
        assert_eq!(advanced.days, stored.next_day - before.next_day);
        days += advanced.days;
        let Some((day, job)) = advanced.waiting else { break };
        waits += 1;
        // Stopped before the retrain's day, with nothing after the last stored
        // decision kept; the next advance starts there.
        assert!(stored.next_day <= day, "stopped at {day}, stored up to {}", stored.next_day);
        assert!(seen.iter().all(|d| *d < day), "a day after the retrain was processed");
        assert!(stored.decisions.iter().all(|d| d.day < day));
        assert!(!stored.versions.iter().any(|v| v.job_key == job.to_string()), "the waited-for version is not in");
        // The next ask has it trained.
        assert!(waits < 50, "no progress");
    }
    let here = deployments.state("here").await.expect("read").expect("state");
    let elsewhere = deployments.state("elsewhere").await.expect("read").expect("state");
    assert_eq!(waits, here.versions.len() - 1, "one wait per retrain");
    assert_eq!(days, here_days, "every day decided once");
    assert_eq!(elsewhere.decisions, here.decisions);
    assert_eq!(elsewhere.versions, here.versions);
    assert_eq!(elsewhere.switches, here.switches);
    assert_eq!(elsewhere.next_day, here.next_day);
}

/// A coordinator's advance loop does not advance a deployment again while the retrain
/// it waits for is still being trained (it would stop at the same day): the trainer is
/// asked only whether the job is still training; once it is not, the advance goes on.
#[tokio::test]
async fn a_waiting_deployment_is_not_advanced_again_until_its_retrain_is_trained() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    struct Queue {
        asked: Arc<AtomicUsize>,
        training: Arc<AtomicBool>,
    }
    #[async_trait::async_trait]
    impl Retrainer for Queue {
        async fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if self.training.load(Ordering::SeqCst) { Ok(None) } else { LOCAL.model_file(opened, job).await }
        }
        async fn still_training(&self, _key: &JobKey) -> bool {
            self.training.load(Ordering::SeqCst)
        }
    }
    let files = files();
    Deployments::new(files.clone()).deploy(monthly("d"), &Device::Cpu).await.expect("deployed");
    let (asked, training) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(true)));
    let trainer = Queue { asked: asked.clone(), training: training.clone() };
    let predictor = Predictor::new(Deployments::new(files.clone()), Device::Cpu).with_trainer(Box::new(trainer));
    predictor.advance_pending().await;
    let stopped = predictor.deployments().state("d").await.expect("read").expect("state");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "the first retrain is asked for");
    predictor.advance_pending().await;
    predictor.advance_pending().await;
    assert_eq!(asked.load(Ordering::SeqCst), 1, "advanced again while the retrain was training");
    assert_eq!(predictor.deployments().state("d").await.expect("read").expect("state").revision, stopped.revision);
    training.store(false, Ordering::SeqCst);
    predictor.advance_pending().await;
    let done = predictor.deployments().state("d").await.expect("read").expect("state");
    assert!(done.next_day > stopped.next_day && done.versions.len() > 2, "it went on once trained");
}

/// Two writers of one deployment: the one that read an older revision is refused
/// rather than overwriting the other's save (a rollback during an advance).
#[tokio::test]
async fn a_save_over_another_writers_save_is_refused() {
    let files = files();
    let deployments = Deployments::new(files.clone());
    deployments.deploy(monthly("d"), &Device::Cpu).await.expect("deployed");
    let advanced = deployments.advance("d", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).await.expect("advanced");
    assert!(advanced.days > 100 && advanced.opened.state.expect("state").versions.len() > 3);
    // Two commands read the same revision; the first to save wins.
    let mut stale = deployments.state("d").await.expect("read").expect("state");
    let (rolled, _) = deployments.rollback("d", None).await.expect("rolled back");
    assert_eq!(rolled.revision, stale.revision + 1);
    let refused = deployments.save_state("d", &mut stale).await.expect_err("a stale save");
    assert!(matches!(refused, DeploymentError::Conflict(_)), "{refused}");
    let stored = deployments.state("d").await.expect("read").expect("state");
    assert_eq!(stored, rolled, "the rollback stands");
    // Advancing again reads the rollback and continues from it.
    deployments.advance("d", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).await.expect("advanced again");
    let after = deployments.state("d").await.expect("read").expect("state");
    assert!(after.switches.iter().any(|s| s.rollback));
}
