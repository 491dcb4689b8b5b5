//! Files sortd keeps for itself (the state directory: the sort-event journal, received
//! plans, compiled scratch plans) are private to sortd and its group: directories 0750,
//! files 0640, whatever the process umask. Every place sortd creates such a file or
//! directory goes through these helpers, so the modes are written once.
//!
//! Not for outputs a user asked for on the command line (`sortd plan compile -o`,
//! reports, screenshots): those follow the user's umask. Unix only.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of a directory sortd creates for its state: owner all, group read and enter.
pub const PRIVATE_DIR_MODE: u32 = 0o750;
/// Mode of a file sortd creates for its state: owner read-write, group read.
pub const PRIVATE_FILE_MODE: u32 = 0o640;

/// Creates `path` (and missing parents, also 0750) as a private directory. An existing
/// directory keeps its mode except that bits beyond 0750 are removed: never widened.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)?;
    tighten(path, PRIVATE_DIR_MODE)
}

/// Creates or truncates `path` for writing, mode 0640 (an existing file's mode is
/// narrowed to 0640 at most).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let file = private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    tighten(path, PRIVATE_FILE_MODE)?;
    Ok(file)
}

/// Opens `path` for appending, creating it with mode 0640 (a journal segment).
pub fn open_private_append(path: &Path) -> io::Result<File> {
    let file = private_options().append(true).create(true).open(path)?;
    tighten(path, PRIVATE_FILE_MODE)?;
    Ok(file)
}

/// Syncs a directory, so that a rename or a new file in it survives a power loss.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// `OpenOptions` that create files with mode 0640; the caller sets the access mode.
pub fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(PRIVATE_FILE_MODE);
    options
}

/// Removes mode bits beyond `allowed` (the creation mode is subject to the umask, which
/// can only narrow it; an existing file may be wider).
fn tighten(path: &Path, allowed: u32) -> io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & !allowed != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(mode & allowed))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_are_0750_with_their_parents_and_never_widened() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("var/lib/sortd");
        create_private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o750);
        assert_eq!(mode(&root.path().join("var/lib")), 0o750);
        // Again: fine. An existing wide directory is narrowed, a narrow one kept.
        std::fs::set_permissions(&state, Permissions::from_mode(0o777)).unwrap();
        create_private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o750);
        std::fs::set_permissions(&state, Permissions::from_mode(0o700)).unwrap();
        create_private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
    }

    #[test]
    fn files_are_0640_created_truncated_or_appended() {
        let root = tempfile::tempdir().unwrap();
        let plan = root.path().join("plan.sortplan");
        create_private_file(&plan)
            .unwrap()
            .write_all(b"one")
            .unwrap();
        assert_eq!(mode(&plan), 0o640);
        std::fs::set_permissions(&plan, Permissions::from_mode(0o666)).unwrap();
        create_private_file(&plan)
            .unwrap()
            .write_all(b"two")
            .unwrap();
        assert_eq!(mode(&plan), 0o640);
        assert_eq!(std::fs::read(&plan).unwrap(), b"two");

        let journal = root.path().join("events.journal");
        open_private_append(&journal)
            .unwrap()
            .write_all(b"a")
            .unwrap();
        open_private_append(&journal)
            .unwrap()
            .write_all(b"b")
            .unwrap();
        assert_eq!(mode(&journal), 0o640);
        assert_eq!(std::fs::read(&journal).unwrap(), b"ab");
    }
}
