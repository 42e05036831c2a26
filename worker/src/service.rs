//! Running the worker as a system service: the systemd unit that
//! `worker install` prints.

/// A systemd service unit running this worker as a service: its own
/// dynamic user, state kept in /var/lib/wasm-at-home, lowest CPU and I/O
/// priority, the file system read-only but for its state, stopped with
/// SIGTERM and time to drain. `worker install` prints it. A new worker
/// starts paused: it registers, then runs nothing until the volunteer opts
/// in with `worker resume --state-dir /var/lib/wasm-at-home`.
pub fn systemd_unit(binary: &std::path::Path, config: Option<&std::path::Path>) -> String {
    let config = config
        .map(|c| format!(" --config {}", c.display()))
        .unwrap_or_default();
    format!(
        "[Unit]
Description=wasm@home worker (volunteer computing in a WebAssembly sandbox)
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={binary} run{config} --state-dir /var/lib/wasm-at-home --start-paused
DynamicUser=yes
StateDirectory=wasm-at-home
Nice=19
IOSchedulingClass=idle
CPUWeight=1
KillSignal=SIGTERM
# The worker drains for 30 s; give it a little more.
TimeoutStopSec=45
Restart=on-failure
RestartSec=30
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes

[Install]
WantedBy=multi-user.target
",
        binary = binary.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_unit_runs_this_binary_with_the_config_and_low_priority() {
        let unit = systemd_unit(
            std::path::Path::new("/usr/local/bin/worker"),
            Some(std::path::Path::new("/etc/wasm-at-home/worker.toml")),
        );
        assert!(unit.contains(
            "ExecStart=/usr/local/bin/worker run --config /etc/wasm-at-home/worker.toml --state-dir /var/lib/wasm-at-home --start-paused\n"
        ));
        for line in [
            "DynamicUser=yes",
            "StateDirectory=wasm-at-home",
            "Nice=19",
            "KillSignal=SIGTERM",
        ] {
            assert!(unit.contains(line), "{line}");
        }
    }
}
