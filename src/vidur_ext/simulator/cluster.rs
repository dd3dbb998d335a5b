//! The cluster and its event loop: a stream of requests, a global scheduler dispatching them
//! to replicas, and the replicas' batches on one virtual clock.

use serde::Serialize;

use super::clock::{ClockKind, SimTime, VidurSeconds};
use super::events::{EventKind, EventQueue};
use super::replica::{Env, Replica, ReplicaSettings};
use super::sink::SimSink;
use super::summary::{Recorder, SimSummary};
use crate::scheduler::{GlobalPolicy, GlobalScheduler, SchedulerConfig};
use crate::vidur_ext::predictor::ExecutionTimePredictor;
use crate::{Error, Result};

/// One request of the stream the simulator replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimRequest {
    pub request_id: u64,
    /// Arrival, ns since the trace's origin; the stream must be sorted by it.
    pub arrival_time_ns: u64,
    pub num_prefill_tokens: u32,
    pub num_decode_tokens: u32,
}

/// Everything that shapes a simulation besides the predictor and the requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    /// The replica scheduler (the same code and knobs as the real engine).
    pub scheduler: SchedulerConfig,
    /// KV pool of one replica, in blocks.
    pub num_kv_blocks: u64,
    pub num_replicas: u32,
    /// Pipeline stages per replica (the predictor times one stage).
    pub num_pipeline_stages: u32,
    pub global_policy: GlobalPolicy,
    /// Seed of the `random` global scheduler.
    pub seed: u64,
    /// Longest prompt + output served; longer requests become `context_overflow` errors.
    pub max_model_len: u32,
    /// `backend` column of the request rows.
    pub backend_name: String,
}

impl SimConfig {
    /// One replica, one stage, round-robin, backend `vidur_sim`.
    pub fn single_replica(
        scheduler: SchedulerConfig,
        num_kv_blocks: u64,
        max_model_len: u32,
    ) -> Self {
        SimConfig {
            scheduler,
            num_kv_blocks,
            num_replicas: 1,
            num_pipeline_stages: 1,
            global_policy: GlobalPolicy::RoundRobin,
            seed: 0,
            max_model_len,
            backend_name: "vidur_sim".into(),
        }
    }
}

/// A discrete-event simulator of a cluster of replicas, driven by an op-time predictor.
pub struct Simulator<'p> {
    config: SimConfig,
    predictor: &'p dyn ExecutionTimePredictor,
}

impl<'p> Simulator<'p> {
    /// Checks the configuration (the schedulers it describes must be constructible).
    pub fn new(config: SimConfig, predictor: &'p dyn ExecutionTimePredictor) -> Result<Self> {
        if config.num_replicas == 0 || config.num_pipeline_stages == 0 {
            return Err(Error::InvalidInput(format!(
                "a simulated cluster needs at least one replica and one stage, got {} and {}",
                config.num_replicas, config.num_pipeline_stages
            )));
        }
        let sim = Simulator { config, predictor };
        Replica::<u64>::new(0, &sim.replica_settings()?)?;
        Ok(sim)
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn replica_settings(&self) -> Result<ReplicaSettings> {
        let num_kv_blocks = usize::try_from(self.config.num_kv_blocks)
            .map_err(|_| Error::OutOfRange(format!("{} KV blocks", self.config.num_kv_blocks)))?;
        Ok(ReplicaSettings {
            scheduler: self.config.scheduler.clone(),
            num_kv_blocks,
            num_stages: self.config.num_pipeline_stages,
            max_model_len: self.config.max_model_len,
            backend_name: self.config.backend_name.clone(),
        })
    }

    /// Replays `requests` (sorted by arrival; pulled lazily, one instant at a time) and
    /// pushes every output row into `sink`, on the clock the predictor asks for
    /// ([`ExecutionTimePredictor::clock`]).
    pub fn run<I>(&self, requests: I, sink: &mut dyn SimSink) -> Result<SimSummary>
    where
        I: IntoIterator<Item = SimRequest>,
    {
        match self.predictor.clock() {
            ClockKind::IntegerNs => self.run_on::<u64, I>(requests, sink),
            ClockKind::VidurSeconds => self.run_on::<VidurSeconds, I>(requests, sink),
        }
    }

    fn run_on<T, I>(&self, requests: I, sink: &mut dyn SimSink) -> Result<SimSummary>
    where
        T: SimTime,
        I: IntoIterator<Item = SimRequest>,
    {
        let settings = self.replica_settings()?;
        let n = self.config.num_replicas;
        let mut replicas = (0..n)
            .map(|id| Replica::<T>::new(id, &settings))
            .collect::<Result<Vec<_>>>()?;
        let mut global =
            GlobalScheduler::new(self.config.global_policy, n as usize, self.config.seed)?;
        let mut queue = EventQueue::<T>::new();
        let mut recorder = Recorder::new(sink);
        let mut stream = requests.into_iter().peekable();
        let mut arrived: Vec<(u64, SimRequest)> = Vec::new();
        let mut next_seq = 0u64;
        let mut next_batch_id = 0u64;
        let mut last_arrival_ns = 0u64;
        let mut touched = vec![false; n as usize];
        let mut waiting = vec![0usize; n as usize];

        if let Some(first) = stream.peek() {
            queue.push(T::from_ns(first.arrival_time_ns), EventKind::Arrival);
        }
        while let Some(event) = queue.pop() {
            let now = event.time;
            let now_ns = now.to_ns();
            recorder.advance(now_ns);
            match event.kind {
                EventKind::Arrival => {
                    while let Some(r) = stream.next_if(|r| T::from_ns(r.arrival_time_ns) <= now) {
                        if r.arrival_time_ns < last_arrival_ns {
                            return Err(unsorted(&r, last_arrival_ns));
                        }
                        last_arrival_ns = r.arrival_time_ns;
                        arrived.push((next_seq, r));
                        next_seq += 1;
                        recorder.arrived();
                    }
                    if let Some(next) = stream.peek() {
                        if next.arrival_time_ns < now_ns {
                            return Err(unsorted(next, now_ns));
                        }
                        queue.push(T::from_ns(next.arrival_time_ns), EventKind::Arrival);
                    }
                    queue.push(now, EventKind::GlobalSchedule);
                }
                EventKind::GlobalSchedule => {
                    // Dispatch in arrival order; `lor` sees each pick's effect on the next.
                    for (w, r) in waiting.iter_mut().zip(&replicas) {
                        *w = r.num_waiting();
                    }
                    for (seq, r) in arrived.drain(..) {
                        let k = global.pick(&waiting)?;
                        replicas[k].admit(&r, seq, &mut recorder)?;
                        waiting[k] = replicas[k].num_waiting();
                        touched[k] = true;
                    }
                    for (k, t) in touched.iter_mut().enumerate() {
                        if std::mem::take(t) {
                            queue.push(now, EventKind::ReplicaSchedule { replica: k as u32 });
                        }
                    }
                }
                EventKind::StageEnd {
                    replica,
                    stage,
                    batch,
                } => {
                    let mut env = Env {
                        queue: &mut queue,
                        predictor: self.predictor,
                        recorder: &mut recorder,
                        next_batch_id: &mut next_batch_id,
                    };
                    replicas[replica as usize].on_stage_end(stage, batch, now, &mut env)?;
                }
                EventKind::BatchEnd { replica, batch } => {
                    let mut env = Env {
                        queue: &mut queue,
                        predictor: self.predictor,
                        recorder: &mut recorder,
                        next_batch_id: &mut next_batch_id,
                    };
                    replicas[replica as usize].on_batch_end(batch, now, &mut env)?;
                }
                EventKind::ReplicaSchedule { replica } => {
                    let mut env = Env {
                        queue: &mut queue,
                        predictor: self.predictor,
                        recorder: &mut recorder,
                        next_batch_id: &mut next_batch_id,
                    };
                    replicas[replica as usize].schedule(now, &mut env)?;
                }
            }
        }
        for r in &mut replicas {
            r.abandon_unfinished(&mut recorder)?;
        }
        recorder.finish(queue.num_pushed(), T::KIND)
    }
}

fn unsorted(r: &SimRequest, before_ns: u64) -> Error {
    Error::InvalidInput(format!(
        "requests must be sorted by arrival: request {} arrives at {} ns, before {} ns",
        r.request_id, r.arrival_time_ns, before_ns
    ))
}
