//! Facts about the machine a node runs on: its name, its machine id and how long it has been up.

use std::time::Duration;

/// The host name, the default node name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `/etc/machine-id` (or D-Bus's copy); a hash of the host name where neither exists.
pub fn machine_id() -> String {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| {
            let digest = blake3::hash(hostname().as_bytes());
            digest.to_hex()[..32].to_string()
        })
}

/// Time since the host booted (`/proc/uptime`); zero where the host does not say.
pub fn uptime() -> Duration {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or_default()
}
