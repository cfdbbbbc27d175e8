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
        command: "fusermount3",
        probe: &["--version"],
        package: "fuse3",
        why: "warpdrive mounts FUSE filesystems (fusermount3 for non-root users)",
    },
    Need {
        command: "python3",
        probe: &["--version"],
        package: "python3-pip",
        why: "the emulator fixtures (moto, azure-storage-blob) are Python",
    },
    Need {
        command: "npm",
        probe: &["--version"],
        package: "npm",
        why: "Azurite, the Azure Blob emulator, comes from npm",
    },
    Need {
        command: "buildah",
        probe: &["--version"],
        package: "buildah",
        why: "CI builds the container images without Docker",
    },
    Need {
        command: "mmdebstrap",
        probe: &["--version"],
        package: "mmdebstrap",
        why: "the images' Debian root filesystems (no registry can be pulled from)",
    },
    Need {
        command: "systemd-analyze",
        probe: &["--version"],
        package: "systemd",
        why: "the chart checks verify deploy/systemd/warpdrive-mount.service",
    },
    Need {
        command: "openssl",
        probe: &["version"],
        package: "openssl",
        why: "the chart checks make a CA certificate for the rendered TLS config",
    },
    Need {
        command: "blkid",
        probe: &["-V"],
        package: "util-linux",
        why: "the node never formats a device that holds a filesystem",
    },
];

/// `program` run with the machine's PATH, or with `path` (the tests' stand-in machine).
fn host(program: &str, path: Option<&std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd
}

fn present(need: &Need, path: Option<&std::ffi::OsStr>) -> bool {
    host(need.command, path)
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
    install(NEEDS.iter().collect(), "the tests", None)?;
    ensure_emulators()
}

/// What the demo runs on the host (the node steps and the FUSE mount, as root), installed
/// the same way, so `cargo xtask demo` works first on a fresh machine.
pub(crate) fn ensure_demo() -> anyhow::Result<()> {
    ensure_demo_on(None)
}

fn ensure_demo_on(path: Option<&std::ffi::OsStr>) -> anyhow::Result<()> {
    const DEMO: &[&str] = &["losetup", "mkfs.xfs", "blkid", "fusermount3"];
    install(
        NEEDS
            .iter()
            .filter(|need| DEMO.contains(&need.command))
            .collect(),
        "the demo",
        path,
    )
}

/// Installs the packages of the needs that are missing (apt-get, as root), then names what is
/// still missing.
fn install(needs: Vec<&Need>, whom: &str, path: Option<&std::ffi::OsStr>) -> anyhow::Result<()> {
    let missing: Vec<&Need> = needs
        .iter()
        .copied()
        .filter(|need| !present(need, path))
        .collect();
    if missing.is_empty() {
        println!("==> setup: every system package {whom} need is installed");
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|need| need.package).collect();
    println!("==> setup: installing {} with apt-get", packages.join(" "));
    let can_apt = host("apt-get", path)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if can_apt {
        let _ = host("apt-get", path).args(["update", "-qq"]).status();
        let _ = host("apt-get", path)
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages)
            .status();
    }
    let still: Vec<String> = missing
        .iter()
        .filter(|need| !present(need, path))
        .map(|need| {
            format!(
                "`{}` (Debian package {}; {})",
                need.command, need.package, need.why
            )
        })
        .collect();
    if !still.is_empty() {
        bail!(
            "{whom} need, and apt-get could not install here (run as root?): {}",
            still.join(", ")
        );
    }
    Ok(())
}

fn ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The emulators and fixtures of the warpdrive tests: moto (S3) and azure-storage-blob from
/// PyPI, Azurite from npm into target/tools.
fn ensure_emulators() -> anyhow::Result<()> {
    const PIP: &[&str] = &[
        "moto[server]",
        "azure-storage-blob",
        "helm-python-sdk",
        "kubernetes-validate",
    ];
    let python_ready = ok("moto_server", &["--help"])
        && ok("kubernetes-validate", &["--version"])
        && ok(
            "python3",
            &["-c", "import boto3, azure.storage.blob, helm_python, yaml"],
        );
    if !python_ready {
        println!("==> setup: installing {} with pip", PIP.join(" "));
        let pip = |args: &[&str]| ok("python3", &[&["-m", "pip", "install", "-q"], args].concat());
        if !pip(PIP) && !pip(&[&["--break-system-packages"], PIP].concat()) {
            bail!(
                "`pip install {}` failed; the S3 and Azure tests and the chart checks need them",
                PIP.join(" ")
            );
        }
    }
    if !ok("kubectl", &["version", "--client"]) {
        bail!(
            "`kubectl` is missing; the chart checks run `kubectl kustomize deploy/` (install kubectl from https://kubernetes.io/docs/tasks/tools/)"
        );
    }
    let tools = crate::root().join("target/tools");
    if !tools.join("node_modules/.bin/azurite-blob").exists() {
        println!("==> setup: installing azurite with npm into target/tools");
        std::fs::create_dir_all(&tools)?;
        let installed = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&tools)
            .arg("azurite")
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            bail!("`npm install azurite` failed; the Azure tests need it");
        }
    }
    println!(
        "==> setup: emulators and chart tools ready (moto, Azurite, helm-python-sdk, kubernetes-validate, kubectl)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A machine with the demo's tools except mkfs.xfs, and an apt-get that `installs` what
    /// it is asked for by dropping the command (or fails).
    fn machine(apt_works: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for tool in ["losetup", "blkid", "fusermount3"] {
            script(dir.path(), tool, "exit 0");
        }
        let bin = dir.path().display();
        let install = if apt_works {
            format!(
                "for p in \"$@\"; do [ \"$p\" = xfsprogs ] && printf '#!/bin/sh\\nexit 0\\n' > {bin}/mkfs.xfs && /bin/chmod 755 {bin}/mkfs.xfs; done; echo \"$@\" >> {bin}/apt.log"
            )
        } else {
            "exit 100".to_owned()
        };
        script(
            dir.path(),
            "apt-get",
            &format!("case \"$1\" in --version|update) exit 0;; install) {install};; esac"),
        );
        dir
    }

    #[test]
    fn the_demo_installs_a_missing_mkfs_xfs_or_names_it() {
        let ok = machine(true);
        ensure_demo_on(Some(ok.path().as_os_str())).expect("apt-get installs xfsprogs");
        let log = std::fs::read_to_string(ok.path().join("apt.log")).unwrap();
        assert!(log.contains("install") && log.contains("xfsprogs"), "{log}");
        assert!(ok.path().join("mkfs.xfs").exists());

        let broken = machine(false);
        let err = ensure_demo_on(Some(broken.path().as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`mkfs.xfs` (Debian package xfsprogs;") && err.contains("the demo"),
            "{err}"
        );
    }
}
