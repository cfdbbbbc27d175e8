//! What the tests need from the machine: checked, installed with apt-get where possible,
//! and otherwise named exactly so the user knows what to install.

use std::process::{Command, Stdio};

use anyhow::bail;

use crate::cargo;

/// A command the tests run, and the Debian package that provides it.
struct Need {
    command: &'static str,
    probe: &'static [&'static str],
    package: &'static str,
    why: &'static str,
}

const NEEDS: &[Need] = &[
    Need {
        command: "git",
        probe: &["--version"],
        package: "git",
        why: "`--version` records the commit",
    },
    Need {
        command: "kill",
        probe: &["-l"],
        package: "procps",
        why: "binary tests stop daemons with SIGTERM",
    },
    Need {
        command: "losetup",
        probe: &["--version"],
        package: "mount",
        why: "node tests attach zvol files as loop devices",
    },
    Need {
        command: "mkfs.ext4",
        probe: &["-V"],
        package: "e2fsprogs",
        why: "node tests format block volumes with ext4 and grow them with resize2fs",
    },
    Need {
        command: "mkfs.xfs",
        probe: &["-V"],
        package: "xfsprogs",
        why: "node tests format block volumes with xfs and grow them online with xfs_growfs",
    },
    Need {
        command: "blkid",
        probe: &["-V"],
        package: "util-linux",
        why: "the node never formats a device that holds a filesystem",
    },
];

fn present(need: &Need) -> bool {
    Command::new(need.command)
        .args(need.probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure every need is met, installing missing packages when running as root with apt.
pub(crate) fn ensure() -> anyhow::Result<()> {
    for component in ["fmt", "clippy"] {
        let ok = cargo()
            .args([component, "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!(
                "`cargo {component}` is missing; install it with `rustup component add {}`",
                if component == "fmt" {
                    "rustfmt"
                } else {
                    "clippy"
                }
            );
        }
    }
    let missing: Vec<&Need> = NEEDS.iter().filter(|need| !present(need)).collect();
    if missing.is_empty() {
        println!("==> setup: everything the tests need is installed");
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|need| need.package).collect();
    println!("==> setup: installing {} with apt-get", packages.join(" "));
    let can_apt = Command::new("apt-get")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if can_apt {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages)
            .status();
    }
    let still: Vec<String> = NEEDS
        .iter()
        .filter(|need| !present(need))
        .map(|need| {
            format!(
                "`{}` (Debian package {}; {})",
                need.command, need.package, need.why
            )
        })
        .collect();
    if !still.is_empty() {
        bail!("missing and not installable here: {}", still.join(", "));
    }
    Ok(())
}
