//! The one registry of timed operator classes, shared by the model's op timer, the engine's
//! `batch_metrics.csv` columns, profiling bundles, predictors and the simulator. Everything
//! that lists ops derives from [`Op::ALL`] and [`Op::name`].

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The one list of op classes, in index order: variant, stable name, `batch_metrics.csv`
/// column. `with_ops!(m)` calls `m! { Variant name column, ... }`, so the [`Op`] enum, its
/// names, [`BatchMetricsRow`](crate::io::records::BatchMetricsRow)'s fields and the schema's
/// columns are all expanded from it. Append only: the names are a file contract.
macro_rules! with_ops {
    ($m:ident) => {
        $m! {
            Emb emb op_emb_ns,
            InputLayernorm input_layernorm op_input_layernorm_ns,
            AttnPreProj attn_pre_proj op_attn_pre_proj_ns,
            AttnQkNorm attn_qk_norm op_attn_qk_norm_ns,
            AttnRope attn_rope op_attn_rope_ns,
            AttnKvCacheSave attn_kv_cache_save op_attn_kv_cache_save_ns,
            AttnPrefill attn_prefill op_attn_prefill_ns,
            AttnDecode attn_decode op_attn_decode_ns,
            AttnPostProj attn_post_proj op_attn_post_proj_ns,
            PostAttentionLayernorm post_attention_layernorm op_post_attention_layernorm_ns,
            MlpUpProj mlp_up_proj op_mlp_up_proj_ns,
            MlpAct mlp_act op_mlp_act_ns,
            MlpDownProj mlp_down_proj op_mlp_down_proj_ns,
            Add add op_add_ns,
            FinalNorm final_norm op_final_norm_ns,
            LmHead lm_head op_lm_head_ns,
            Sampler sampler op_sampler_ns,
            AllReduce all_reduce op_all_reduce_ns,
            SendRecv send_recv op_send_recv_ns,
        }
    };
}
pub(crate) use with_ops;

macro_rules! define_op {
    ($($variant:ident $name:ident $column:ident,)*) => {
        /// One timed operator class. Its [`Op::name`] is the `<op>` in a bundle's
        /// `time_stats.<op>.*` columns and in `batch_metrics.csv`'s `op_<op>_ns` columns,
        /// so the names are a contract: never rename one, only append.
        ///
        /// Per-layer ops are timed once per transformer layer; `emb`, `final_norm`,
        /// `lm_head` and `sampler` once per iteration; `all_reduce`/`send_recv` are the
        /// tensor/pipeline-parallel collectives.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Op {
            $($variant,)*
        }

        impl Op {
            /// Number of op classes; the length of every per-op array.
            pub const COUNT: usize = [$(stringify!($name),)*].len();

            /// Every op, in index order (`Op::ALL[op.index()] == op`).
            pub const ALL: [Op; Op::COUNT] = [$(Op::$variant,)*];

            /// Every op's name in index order (the `<name>` of the `op_<name>_ns` columns).
            pub const NAMES: [&'static str; Op::COUNT] = [$(stringify!($name),)*];

            /// The stable snake_case name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => stringify!($name),)*
                }
            }
        }
    };
}

with_ops!(define_op);

impl Op {
    /// The ops a forward of the model runs, in the order it runs them (per layer: norm,
    /// attention, residual add, norm, MLP), then the sampler. The collectives are the
    /// simulator's (tensor/pipeline parallelism); the engine runs on one device.
    pub const MODEL: [Op; 17] = [
        Op::Emb,
        Op::InputLayernorm,
        Op::AttnPreProj,
        Op::AttnQkNorm,
        Op::AttnRope,
        Op::AttnKvCacheSave,
        Op::AttnPrefill,
        Op::AttnDecode,
        Op::AttnPostProj,
        Op::Add,
        Op::PostAttentionLayernorm,
        Op::MlpUpProj,
        Op::MlpAct,
        Op::MlpDownProj,
        Op::FinalNorm,
        Op::LmHead,
        Op::Sampler,
    ];

    /// Whether a model op runs once per decoder layer (as opposed to once per iteration);
    /// false for the collectives, which the model does not run.
    pub const fn is_per_layer(self) -> bool {
        !matches!(
            self,
            Op::Emb | Op::FinalNorm | Op::LmHead | Op::Sampler | Op::AllReduce | Op::SendRecv
        )
    }

    /// Position in [`Op::ALL`] and in per-op arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Looks an op up by its stable name.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Op {
    type Err = Error;

    fn from_str(s: &str) -> Result<Op> {
        Op::from_name(s).ok_or_else(|| {
            let known: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
            Error::InvalidInput(format!("unknown op `{s}` (known: {})", known.join(", ")))
        })
    }
}

/// A set of ops as a bit mask: `Copy`, allocation-free, so a prediction can say which of its
/// lookups left the profiled grid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpSet(u32);

impl OpSet {
    /// The empty set.
    pub const EMPTY: OpSet = OpSet(0);

    /// Adds `op`.
    pub fn insert(&mut self, op: Op) {
        self.0 |= 1 << op.index();
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: Op) -> bool {
        self.0 & (1 << op.index()) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of ops in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The set's members in index order.
    pub fn iter(self) -> impl Iterator<Item = Op> {
        Op::ALL.into_iter().filter(move |op| self.contains(*op))
    }

    /// Union of two sets.
    pub fn union(self, other: OpSet) -> OpSet {
        OpSet(self.0 | other.0)
    }
}

impl FromIterator<Op> for OpSet {
    fn from_iter<I: IntoIterator<Item = Op>>(iter: I) -> Self {
        let mut set = OpSet::EMPTY;
        for op in iter {
            set.insert(op);
        }
        set
    }
}

impl fmt::Display for OpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for op in self.iter() {
            if !first {
                f.write_str(", ")?;
            }
            f.write_str(op.name())?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_indices_match_all() {
        for (i, op) in Op::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i);
            assert_eq!(op.name().parse::<Op>().unwrap(), op);
        }
        assert!("attn".parse::<Op>().is_err());
        assert_eq!(Op::ALL.len(), Op::COUNT);
        assert_eq!(Op::NAMES[Op::Add.index()], "add");
        assert!(Op::MODEL.iter().all(|op| Op::ALL.contains(op)));
        assert!(!Op::LmHead.is_per_layer() && Op::Add.is_per_layer());
        // The names are a file contract; spot-check the ones other modules key on.
        assert_eq!(Op::AttnKvCacheSave.to_string(), "attn_kv_cache_save");
        assert_eq!(
            Op::PostAttentionLayernorm.name(),
            "post_attention_layernorm"
        );
    }

    #[test]
    fn op_set_basics() {
        let set: OpSet = [Op::Add, Op::Emb, Op::SendRecv].into_iter().collect();
        assert_eq!(set.len(), 3);
        assert!(set.contains(Op::Add) && !set.contains(Op::LmHead));
        assert_eq!(set.to_string(), "emb, add, send_recv");
        assert!(OpSet::EMPTY.is_empty());
    }
}
