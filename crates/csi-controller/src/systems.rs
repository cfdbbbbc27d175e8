//! Several TrueNAS systems behind one controller: which system a volume id names, which
//! systems a CreateVolume may use (the StorageClass `system` parameter, then CSI topology),
//! and the topology segment a volume reports. Each system has its own client, so one that is
//! down never blocks calls for another.

use std::collections::BTreeMap;

use csi_api::VolumeId;
use csi_api::csi::{Topology, TopologyRequirement};
use truenas::Client;
use truenas::api::Dataset;

use crate::error::ControllerError;
use crate::props;

/// One TrueNAS system the controller provisions on.
pub struct System {
    /// Its name in the config, in volume ids and in the StorageClass `system` parameter.
    pub name: String,
    /// Its API connection.
    pub client: Client,
    /// Address nodes use for data when a StorageClass gives no `server` (the API URL's host).
    pub default_server: String,
    /// The topology segment its volumes are accessible from (empty: no topology).
    pub topology: BTreeMap<String, String>,
}

impl System {
    /// Whether a node (or a requirement) with `segments` can reach this system: every key of
    /// the system's segment is there with the same value.
    fn reachable_from(&self, segments: &std::collections::HashMap<String, String>) -> bool {
        self.topology
            .iter()
            .all(|(key, value)| segments.get(key) == Some(value))
    }

    /// The CSI topology a volume on this system is accessible from.
    pub(crate) fn accessible_topology(&self) -> Vec<Topology> {
        if self.topology.is_empty() {
            return Vec::new();
        }
        vec![Topology {
            segments: self
                .topology
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }]
    }
}

/// The systems of this deployment.
pub struct Systems {
    systems: Vec<System>,
    /// Index of the system ids without a system name belong to.
    default: usize,
    /// Whether new ids name their system (several systems configured).
    named: bool,
}

impl Systems {
    /// One system, ids without a system name, no topology: the single-system deployment.
    pub fn single(client: Client, default_server: String) -> Self {
        Self {
            systems: vec![System {
                name: "default".into(),
                client,
                default_server,
                topology: BTreeMap::new(),
            }],
            default: 0,
            named: false,
        }
    }

    /// Several systems; ids without a system name (made before there were several) belong to
    /// `default`. Names must be unique and valid in ids.
    pub fn several(systems: Vec<System>, default: &str) -> Result<Self, String> {
        let mut seen = std::collections::BTreeSet::new();
        for system in &systems {
            if !csi_api::valid_system_name(&system.name) {
                return Err(format!(
                    "system name `{}` must be lowercase letters, digits and -, and not a protocol name",
                    system.name
                ));
            }
            if !seen.insert(system.name.as_str()) {
                return Err(format!("system name `{}` is used twice", system.name));
            }
        }
        let default = systems
            .iter()
            .position(|s| s.name == default)
            .ok_or_else(|| format!("default system `{default}` is not one of the systems"))?;
        Ok(Self {
            systems,
            default,
            named: true,
        })
    }

    /// Every system, in config order.
    pub fn all(&self) -> &[System] {
        &self.systems
    }

    /// The name of the system ids without a system name belong to.
    pub fn default_name(&self) -> &str {
        &self.systems[self.default].name
    }

    /// Whether volumes carry topology (several systems).
    pub fn has_topology(&self) -> bool {
        self.named
    }

    /// The system a volume id names (an id without a name: the default system).
    pub(crate) fn for_id(&self, id: &VolumeId) -> Result<&System, ControllerError> {
        match &id.system {
            None => Ok(&self.systems[self.default]),
            Some(name) => self.by_name(name).ok_or_else(|| {
                ControllerError::FailedPrecondition(format!(
                    "volume {id} is on TrueNAS system `{name}`, which is not in this driver's config (configured: {})",
                    self.names()
                ))
            }),
        }
    }

    fn by_name(&self, name: &str) -> Option<&System> {
        self.systems.iter().find(|s| s.name == name)
    }

    fn names(&self) -> String {
        self.systems
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The system name new ids of volumes on `system` carry (`None` with one system).
    pub(crate) fn id_name(&self, system: &System) -> Option<String> {
        self.named.then(|| system.name.clone())
    }

    /// The system name a listed volume's id carries: its own system's name when it was made
    /// by a several-system deployment (it has the marker), none when it was made before and
    /// lives on the default system (the id its PV has).
    pub(crate) fn listed_name(&self, system: &System, dataset: &Dataset) -> Option<String> {
        if !self.named {
            return None;
        }
        let made_named = dataset.user_property(props::SYSTEM).is_some();
        let on_default = std::ptr::eq(system, &self.systems[self.default]);
        (made_named || !on_default).then(|| system.name.clone())
    }

    /// The systems a CreateVolume may use, best first: the one the StorageClass names, else
    /// all; then only those the requisite topology reaches, in the order of the preferred
    /// topology (CSI: preferred first, then the rest of the requisite).
    pub(crate) fn candidates(
        &self,
        pinned: Option<&str>,
        requirements: Option<&TopologyRequirement>,
    ) -> Result<Vec<&System>, ControllerError> {
        let mut chosen: Vec<&System> = match pinned {
            Some(name) => vec![self.by_name(name).ok_or_else(|| {
                ControllerError::invalid_argument(format!(
                    "StorageClass parameter `system`: `{name}` is not a configured TrueNAS system (configured: {})",
                    self.names()
                ))
            })?],
            None => self.systems.iter().collect(),
        };
        let Some(requirements) = requirements.filter(|_| self.named) else {
            return Ok(chosen);
        };
        if !requirements.requisite.is_empty() {
            chosen.retain(|s| {
                requirements
                    .requisite
                    .iter()
                    .any(|t| s.reachable_from(&t.segments))
            });
        }
        let rank = |s: &System| {
            requirements
                .preferred
                .iter()
                .position(|t| s.reachable_from(&t.segments))
                .unwrap_or(usize::MAX)
        };
        chosen.sort_by_key(|s| rank(s));
        if chosen.is_empty() {
            let wanted: Vec<String> = requirements
                .requisite
                .iter()
                .map(|t| {
                    let mut pairs: Vec<String> =
                        t.segments.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    pairs.sort();
                    format!("{{{}}}", pairs.join(","))
                })
                .collect();
            return Err(ControllerError::NoSpace(format!(
                "no TrueNAS system{} is accessible from the requisite topology {}",
                pinned
                    .map(|p| format!(" (StorageClass system `{p}`)"))
                    .unwrap_or_default(),
                wanted.join(" or ")
            )));
        }
        Ok(chosen)
    }

    /// The systems a GetCapacity for `topology` (and a StorageClass `system`) is about.
    pub(crate) fn for_capacity(
        &self,
        pinned: Option<&str>,
        topology: Option<&Topology>,
    ) -> Result<Vec<&System>, ControllerError> {
        let requirement = topology.map(|t| TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: Vec::new(),
        });
        match self.candidates(pinned, requirement.as_ref()) {
            Err(ControllerError::NoSpace(_)) => Ok(Vec::new()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn system(name: &str, zone: &str) -> System {
        let url = url::Url::parse("ws://127.0.0.1:9/api/current").unwrap();
        let mut settings =
            truenas::ClientSettings::new(url, truenas::ApiKey::from_fn(|| Err("none".into())));
        settings.allow_insecure_transport = true;
        let metrics =
            truenas::ClientMetrics::register(&mut prometheus_client::registry::Registry::default());
        let client = Client::new(settings, metrics).unwrap();
        System {
            name: name.into(),
            client,
            default_server: "127.0.0.1".into(),
            topology: BTreeMap::from([("topology.kubernetes.io/zone".to_owned(), zone.to_owned())]),
        }
    }

    fn topology(zone: &str) -> Topology {
        Topology {
            segments: HashMap::from([
                ("topology.kubernetes.io/zone".to_owned(), zone.to_owned()),
                ("topology.tns.csi.io/node".to_owned(), "w1".to_owned()),
            ]),
        }
    }

    #[tokio::test]
    async fn requisite_filters_and_preferred_orders() {
        let systems = Systems::several(
            vec![system("a", "z1"), system("b", "z2"), system("c", "z3")],
            "a",
        )
        .unwrap();
        let names = |v: Vec<&System>| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let req = TopologyRequirement {
            requisite: vec![topology("z2"), topology("z3")],
            preferred: vec![topology("z3"), topology("z2")],
        };
        assert_eq!(
            names(systems.candidates(None, Some(&req)).unwrap()),
            ["c", "b"]
        );
        assert_eq!(
            names(systems.candidates(Some("b"), Some(&req)).unwrap()),
            ["b"]
        );
        let err = systems.candidates(Some("a"), Some(&req)).err().unwrap();
        assert!(matches!(err, ControllerError::NoSpace(_)), "{err}");
        let err = systems.candidates(Some("x"), None).err().unwrap();
        assert!(err.to_string().contains("configured: a, b, c"), "{err}");
        assert_eq!(
            names(systems.candidates(None, None).unwrap()),
            ["a", "b", "c"]
        );
        assert_eq!(
            names(systems.for_capacity(None, Some(&topology("z1"))).unwrap()),
            ["a"]
        );
        assert!(
            systems
                .for_capacity(None, Some(&topology("z9")))
                .unwrap()
                .is_empty()
        );
        // Ids: none names the default system, others by name, unknown names refused.
        let old: VolumeId = "nfs:tank/csi/v".parse().unwrap();
        assert_eq!(systems.for_id(&old).unwrap().name, "a");
        let on_c: VolumeId = "c:nfs:tank/csi/v".parse().unwrap();
        assert_eq!(systems.for_id(&on_c).unwrap().name, "c");
        let gone: VolumeId = "d:nfs:tank/csi/v".parse().unwrap();
        assert!(matches!(
            systems.for_id(&gone),
            Err(ControllerError::FailedPrecondition(_))
        ));
        assert!(Systems::several(vec![system("a", "z"), system("a", "z")], "a").is_err());
        assert!(Systems::several(vec![system("a", "z")], "b").is_err());
    }
}
