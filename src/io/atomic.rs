//! Atomic file writes: write to a temp file in the same directory, fsync, rename.
//!
//! A reader therefore sees either the old file or the complete new one, never a torn write,
//! even if the process is killed mid-write.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IoContext;
use crate::Result;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique hidden sibling of `path` for its temporary version. The extension stays last
/// (`figures/cdf.png` → `figures/.cdf.tmp-<pid>-<n>.png`) because some writers, such as the
/// PNG encoder, pick the format from it.
fn temp_path_for(path: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match path.extension() {
        Some(ext) => {
            path.with_file_name(format!(".{stem}.tmp-{pid}-{n}.{}", ext.to_string_lossy()))
        }
        None => path.with_file_name(format!(".{stem}.tmp-{pid}-{n}")),
    }
}

/// A buffered writer to a temp file that becomes `path` only on [`AtomicFile::commit`].
/// Dropping it without committing removes the temp file.
pub struct AtomicFile {
    path: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Creates the temp file (and the parent directory if needed).
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                fs::create_dir_all(parent).with_path(parent)?;
            }
        }
        let temp = temp_path_for(&path);
        let file = File::create(&temp).with_path(&temp)?;
        Ok(Self {
            path,
            temp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The final path this file will have.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs and renames the temp file into place.
    pub fn commit(mut self) -> Result<()> {
        if let Some(writer) = self.writer.take() {
            let file = writer
                .into_inner()
                .map_err(|e| crate::Error::io(&self.temp, e.into_error()))?;
            file.sync_all().with_path(&self.temp)?;
        }
        fs::rename(&self.temp, &self.path).with_path(&self.path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.writer.as_mut() {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("atomic file already committed")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.write_all(buf),
            None => Err(std::io::Error::other("atomic file already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    let temp = file.temp.clone();
    file.write_all(bytes).with_path(&temp)?;
    file.commit()
}

/// Produces `path` atomically with a writer that insists on creating the file itself (an
/// image encoder given a path, say): `write` creates the temporary path it is given, which
/// is then synced and renamed over `path`. If `write` fails, the temporary file is removed.
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_path(parent)?;
    }
    let temp = temp_path_for(path);
    let result = write(&temp).and_then(|()| {
        File::open(&temp)
            .and_then(|f| f.sync_all())
            .with_path(&temp)?;
        fs::rename(&temp, path).with_path(path)
    });
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing_behind() {
        let dir = tempdir();
        let path = dir.join("a.txt");
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!path.exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        write_atomic(&path, b"done").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"done");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn write_with_keeps_the_extension_and_cleans_up_on_failure() {
        let dir = tempdir();
        let path = dir.join("figure.png");
        write_atomic_with(&path, |tmp| {
            assert_eq!(tmp.extension().unwrap(), "png");
            assert_eq!(tmp.parent(), Some(dir.as_path()));
            fs::write(tmp, b"png bytes").with_path(tmp)
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"png bytes");
        let failed = write_atomic_with(dir.join("other.svg"), |tmp| {
            fs::write(tmp, b"half").with_path(tmp)?;
            Err(crate::Error::Msg("encoder failed".into()))
        });
        assert!(failed.is_err());
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "temp file left behind"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    pub(crate) fn tempdir() -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("simreal-atomic-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
