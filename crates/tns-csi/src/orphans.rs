//! The orphan reconciler's assembly: the controller's loop (config `orphans:`) and the
//! `tns-csi orphans` report, both reading the cluster through kube-rs.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use csi_controller::{OrphanMetrics, OrphanReport, OrphanSettings, Reconciler, Systems};
use prometheus_client::registry::Registry;
use telemetry::readiness::Readiness;

use crate::cli::OrphanOutput;
use crate::config::Config;

/// A Kubernetes client from the pod's service account, or from KUBECONFIG outside a cluster.
async fn cluster() -> anyhow::Result<Arc<crate::cluster::KubernetesRecords>> {
    let client = kube::Client::try_default().await.context(
        "the orphan reconciler needs the Kubernetes API (in a pod: its service account with RBAC to list persistentvolumes and volumesnapshotcontents; outside: KUBECONFIG)",
    )?;
    Ok(Arc::new(crate::cluster::KubernetesRecords::new(client)))
}

/// The controller's reconciler as `orphans:` configures it.
pub(crate) async fn reconciler(
    config: &Config,
    systems: Arc<Systems>,
    locks: csi_api::NameLocks,
    metrics: OrphanMetrics,
) -> anyhow::Result<Reconciler> {
    let settings = OrphanSettings {
        delete: !config.orphans.dry_run,
        grace: config.orphans.grace_period,
    };
    Ok(Reconciler::new(
        systems,
        cluster().await?,
        settings,
        locks,
        metrics,
    ))
}

/// `tns-csi orphans`: one dry-run pass, printed.
pub(crate) async fn report(config: Config, output: OrphanOutput) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let tls_metrics = tls::TlsMetrics::register(&mut registry);
    let systems = crate::run::connect_systems(
        &config,
        &tls_metrics,
        &mut registry,
        &Readiness::default(),
        true,
    )?
    .context("no TrueNAS system configured (`truenas` or `systems`)")?;
    for system in systems.all() {
        // Wait for the login (a system that is down is reported as an error below).
        let _ = system.client.ready().await;
    }
    let reconciler = Reconciler::new(
        systems,
        cluster().await?,
        OrphanSettings {
            delete: false,
            grace: std::time::Duration::MAX,
        },
        csi_api::NameLocks::default(),
        OrphanMetrics::default(),
    );
    let report = reconciler
        .pass()
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let mut out = std::io::stdout().lock();
    match output {
        OrphanOutput::Json => writeln!(out, "{}", to_json(&report))?,
        OrphanOutput::Table => write!(out, "{}", to_table(&report))?,
    }
    out.flush()?;
    Ok(())
}

fn to_json(report: &OrphanReport) -> serde_json::Value {
    let orphans: Vec<_> = report
        .orphans
        .iter()
        .map(|o| {
            serde_json::json!({
                "system": o.system,
                "kind": o.kind.as_str(),
                "object": o.object,
                "id": o.id,
                "reason": o.reason,
            })
        })
        .collect();
    let errors: Vec<_> = report
        .errors
        .iter()
        .map(|(system, error)| serde_json::json!({"system": system, "error": error}))
        .collect();
    serde_json::json!({"orphans": orphans, "errors": errors})
}

fn to_table(report: &OrphanReport) -> String {
    let mut rows = vec![[
        "SYSTEM".to_owned(),
        "KIND".to_owned(),
        "OBJECT".to_owned(),
        "ID".to_owned(),
        "REASON".to_owned(),
    ]];
    for o in &report.orphans {
        rows.push([
            o.system.clone(),
            o.kind.as_str().to_owned(),
            o.object.clone(),
            o.id.map(|id| id.to_string()).unwrap_or_else(|| "-".into()),
            o.reason.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &rows {
        for (c, width) in widths.iter().enumerate() {
            text.push_str(&format!("{:<width$}  ", row[c]));
        }
        text.push_str(&row[4]);
        text.push('\n');
    }
    text.push_str(&format!("{} orphan(s)\n", report.orphans.len()));
    for (system, error) in &report.errors {
        text.push_str(&format!("system {system} was not read: {error}\n"));
    }
    text
}
