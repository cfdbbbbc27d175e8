//! API methods as the client sends them: each names whether a call of it may be sent again
//! when its socket drops before the reply. A read changes nothing and is resent on the
//! reconnected socket; a change may have happened, so its caller must look before retrying.

/// Whether a call may be sent again after its socket dropped before the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// It changes nothing: resend it transparently.
    Safe,
    /// It may have changed state: fail with a retryable transport error instead.
    Never,
}

/// A TrueNAS API method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    name: &'static str,
    resend: Resend,
}

impl Method {
    /// A method that changes nothing (queries, config reads, pings).
    pub const fn read(name: &'static str) -> Self {
        Self {
            name,
            resend: Resend::Safe,
        }
    }

    /// A method that may change state (create, update, delete, jobs).
    pub const fn change(name: &'static str) -> Self {
        Self {
            name,
            resend: Resend::Never,
        }
    }

    /// The dotted method name on the wire.
    pub const fn name(self) -> &'static str {
        self.name
    }

    /// Whether it may be resent after a drop.
    pub const fn resend(self) -> Resend {
        self.resend
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}
