//! Which device a measurement was taken on, so that a profiling bundle is never silently used
//! to predict a run on another device or dtype.
//!
//! `vidur_profile` records a [`DeviceIdentity`] in its bundle's `profiling_meta.json`
//! (`measured_on`) and `real` in its `run_meta.json` (`extra.device`). The `vidur` stage checks
//! a bundle against the device its config simulates, `replay` and `compare` against the real
//! run they are used with ([`check_bundle_device`]); a difference is refused, naming both,
//! unless `vidur.cross_device=true` declares a cross-device study.
//!
//! Records made before these fields existed are read as what they were: every `vidur_profile`
//! run then loaded the model on the CPU (whatever its hardware preset), so an old bundle is
//! `cpu` at the dtype its `details.dtype` names; an old real run is what its resolved config
//! (`params`) and host fingerprint say. Bundles with no `profiling_meta.json` (Vidur's own)
//! carry no identity and are not checked.

use serde::{Deserialize, Serialize};

use crate::io::provenance::RunMeta;
use crate::{Error, Result};

/// Where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// Weight and KV-cache element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    Bf16,
    F16,
}

impl Dtype {
    pub fn size_bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }
}

/// Identity of one GPU, from the CUDA driver (`real_bench::cuda::gpu_fingerprint`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuFingerprint {
    /// Ordinal among the visible devices.
    pub ordinal: usize,
    /// The driver's device name, e.g. `NVIDIA A100-SXM4-80GB`, `NVIDIA H200`.
    pub name: String,
    pub total_memory_bytes: u64,
    /// `major.minor`, e.g. `8.0` for an A100, `9.0` for an H100 or H200.
    pub compute_capability: String,
    /// The CUDA version the driver supports, e.g. `13.0`.
    pub driver_cuda_version: String,
    /// `CUDA_VISIBLE_DEVICES` as the process saw it, if set.
    pub visible_devices: Option<String>,
}

/// The device, and the element type, a bundle or a run was measured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// `cpu` or `cuda`: where the model ran.
    pub kind: Device,
    /// `hardware.device_sku`: `cpu`, `a100`, `h100`, `h200`.
    pub sku: String,
    /// `hardware.name`, the preset: `cpu`, `a100_80g`, ...
    pub hardware: String,
    /// Element type of weights, activations and KV cache.
    pub dtype: Dtype,
    /// The GPU's name from its driver, or the CPU's model name; `None` where only the
    /// configuration is known (what the `vidur` stage simulates).
    pub name: Option<String>,
    /// GPU memory (GPUs only).
    #[serde(default)]
    pub total_memory_bytes: Option<u64>,
    #[serde(default)]
    pub compute_capability: Option<String>,
    /// The CUDA version the GPU's driver supports.
    #[serde(default)]
    pub driver_cuda_version: Option<String>,
    /// The CUDA toolkit the binary was built with (`--features cuda` builds).
    #[serde(default)]
    pub cuda_toolkit_version: Option<String>,
    /// How an identity was reconstructed for a record that predates it; `None` when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inferred: Option<String>,
}

/// The CUDA toolkit (`nvcc --version`) a `--features cuda` build was compiled with.
pub fn cuda_toolkit_version() -> Option<&'static str> {
    option_env!("SIMREAL_CUDA_TOOLKIT_VERSION")
}

impl DeviceIdentity {
    /// The identity a `real` run recorded (`extra.device`), or, for runs made before it
    /// was recorded, the one its resolved config, host fingerprint and GPU record imply.
    /// `None` when `meta` says too little (not a `real` run of this project).
    pub fn of_real_run(meta: &RunMeta) -> Option<Self> {
        if let Some(recorded) = meta.extra.get("device") {
            return serde_json::from_value(recorded.clone()).ok();
        }
        let params = &meta.params;
        let backend = &params["backend"];
        let hardware = &params["hardware"];
        let kind: Device = serde_json::from_value(backend["device"].clone()).ok()?;
        // Before the dtype could be left to the hardware, backend.dtype always held it.
        let dtype: Dtype = serde_json::from_value(params["computed"]["dtype"].clone())
            .or_else(|_| serde_json::from_value(backend["dtype"].clone()))
            .ok()?;
        let gpu: Option<GpuFingerprint> =
            serde_json::from_value(meta.extra["gpu"]["device"].clone()).ok();
        Some(Self {
            kind,
            sku: hardware["device_sku"].as_str()?.to_owned(),
            hardware: hardware["name"].as_str()?.to_owned(),
            dtype,
            name: match &gpu {
                Some(g) => Some(g.name.clone()),
                None if kind == Device::Cpu => known(&meta.env.cpu_model),
                None => None,
            },
            total_memory_bytes: gpu.as_ref().map(|g| g.total_memory_bytes),
            compute_capability: gpu.as_ref().map(|g| g.compute_capability.clone()),
            driver_cuda_version: gpu.as_ref().map(|g| g.driver_cuda_version.clone()),
            cuda_toolkit_version: None,
            inferred: Some("from the run's resolved config and host record".into()),
        })
    }

    /// The identity of a bundle of ours profiled before bundles recorded one: `sku` from its
    /// `device`, `dtype` and CPU model from its `details`, and the CPU, where every such
    /// bundle was measured. `None` without a `details.dtype`.
    pub fn of_legacy_bundle(
        sku: &str,
        details: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Option<Self> {
        let dtype: Dtype = serde_json::from_value(details.get("dtype")?.clone()).ok()?;
        let name = details
            .get("device_fingerprint")
            .and_then(|f| f["cpu_model"].as_str())
            .and_then(known);
        Some(Self {
            kind: Device::Cpu,
            sku: sku.to_owned(),
            hardware: sku.to_owned(),
            dtype,
            name,
            total_memory_bytes: None,
            compute_capability: None,
            driver_cuda_version: None,
            cuda_toolkit_version: None,
            inferred: Some(
                "profiled before bundles recorded their device: vidur_profile then always ran \
                 on the CPU"
                    .into(),
            ),
        })
    }

    /// What differs between `self` (a bundle's device) and `other` (a run's), one phrase
    /// each: the kind of device, the SKU, the dtype, and the device's name where both know it.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        let mut diffs = Vec::new();
        if self.kind != other.kind {
            diffs.push(format!(
                "device {} vs {}",
                self.kind.as_str(),
                other.kind.as_str()
            ));
        }
        if self.sku != other.sku {
            diffs.push(format!("SKU {} vs {}", self.sku, other.sku));
        }
        if self.dtype != other.dtype {
            diffs.push(format!(
                "dtype {} vs {}",
                self.dtype.as_str(),
                other.dtype.as_str()
            ));
        }
        if let (Some(a), Some(b)) = (&self.name, &other.name) {
            if a != b {
                diffs.push(format!("`{a}` vs `{b}`"));
            }
        }
        diffs
    }

    /// One line: `cuda NVIDIA H200 (h200, bf16)`, `cpu (cpu, f32)`.
    pub fn describe(&self) -> String {
        format!(
            "{}{} ({}, {})",
            self.kind.as_str(),
            self.name
                .as_deref()
                .map(|n| format!(" `{n}`"))
                .unwrap_or_default(),
            self.sku,
            self.dtype.as_str()
        )
    }
}

/// `name` unless the fingerprint could not read it.
pub(crate) fn known(name: &str) -> Option<String> {
    (!name.is_empty() && name != "unknown").then(|| name.to_owned())
}

/// A bundle used with a run on another device, as the override allowed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrossDevice {
    pub bundle: DeviceIdentity,
    pub run: DeviceIdentity,
    pub differences: Vec<String>,
}

impl CrossDevice {
    /// The sentence reports open with.
    pub fn sentence(&self) -> String {
        format!(
            "Cross-device study (vidur.cross_device=true): the bundle was measured on {}, the \
             run is on {} ({}).",
            self.bundle.describe(),
            self.run.describe(),
            self.differences.join("; ")
        )
    }
}

/// Checks that the bundle at `bundle_dir`, measured on `bundle`, fits `run` (`run_what` names
/// it in the error: "this config simulates", "real run tmp/real/X ran on"). `Ok(None)` when
/// they match; with `allow_cross_device`, `Ok(Some(..))` describing the difference; otherwise
/// [`Error::Mismatch`] naming both devices and the override.
pub fn check_bundle_device(
    bundle_dir: &std::path::Path,
    bundle: &DeviceIdentity,
    run_what: &str,
    run: &DeviceIdentity,
    allow_cross_device: bool,
) -> Result<Option<CrossDevice>> {
    let differences = bundle.differences(run);
    if differences.is_empty() {
        return Ok(None);
    }
    if allow_cross_device {
        return Ok(Some(CrossDevice {
            bundle: bundle.clone(),
            run: run.clone(),
            differences,
        }));
    }
    Err(Error::Mismatch(format!(
        "bundle {} was measured on {}, but {run_what} {} ({}); profile on the device that \
         serves (vidur_profile with this run's hardware and backend), or set \
         vidur.cross_device=true for a cross-device study",
        bundle_dir.display(),
        bundle.describe(),
        run.describe(),
        differences.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(dtype: Dtype) -> DeviceIdentity {
        DeviceIdentity {
            kind: Device::Cpu,
            sku: "cpu".into(),
            hardware: "cpu".into(),
            dtype,
            name: Some("AMD EPYC".into()),
            total_memory_bytes: None,
            compute_capability: None,
            driver_cuda_version: None,
            cuda_toolkit_version: None,
            inferred: None,
        }
    }

    #[test]
    fn differences_name_kind_sku_dtype_and_known_names() {
        let a = cpu(Dtype::F32);
        assert!(a.differences(&a).is_empty());
        let mut gpu = cpu(Dtype::Bf16);
        gpu.kind = Device::Cuda;
        gpu.sku = "h200".into();
        gpu.name = Some("NVIDIA H200".into());
        assert_eq!(
            a.differences(&gpu),
            vec![
                "device cpu vs cuda",
                "SKU cpu vs h200",
                "dtype f32 vs bf16",
                "`AMD EPYC` vs `NVIDIA H200`"
            ]
        );
        // An unnamed side (a configured device) is compared on what it says.
        let mut configured = a.clone();
        configured.name = None;
        assert!(a.differences(&configured).is_empty());
    }

    #[test]
    fn the_check_refuses_names_both_or_records_the_override() {
        let dir = std::path::Path::new("tmp/vidur_profile/prof-x");
        let bundle = cpu(Dtype::F32);
        let run = cpu(Dtype::Bf16);
        assert_eq!(
            check_bundle_device(dir, &bundle, "the run uses", &bundle, false).unwrap(),
            None
        );
        let err = check_bundle_device(dir, &bundle, "real run R ran on", &run, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("prof-x") && err.contains("(cpu, f32)"),
            "{err}"
        );
        assert!(
            err.contains("real run R ran on cpu `AMD EPYC` (cpu, bf16)"),
            "{err}"
        );
        assert!(err.contains("vidur.cross_device=true"), "{err}");
        let cross = check_bundle_device(dir, &bundle, "x", &run, true)
            .unwrap()
            .unwrap();
        assert_eq!(cross.differences, vec!["dtype f32 vs bf16"]);
        assert!(cross.sentence().starts_with("Cross-device study"));
    }

    #[test]
    fn legacy_bundles_are_cpu_at_their_recorded_dtype() {
        let details: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_value(serde_json::json!({
                "dtype": "bf16",
                "device_fingerprint": {"cpu_model": "Intel Xeon"},
            }))
            .unwrap();
        let id = DeviceIdentity::of_legacy_bundle("a100", &details).unwrap();
        assert_eq!(
            (id.kind, id.sku.as_str(), id.dtype),
            (Device::Cpu, "a100", Dtype::Bf16)
        );
        assert_eq!(id.name.as_deref(), Some("Intel Xeon"));
        assert!(id.inferred.is_some());
        assert!(DeviceIdentity::of_legacy_bundle("cpu", &Default::default()).is_none());
    }
}
