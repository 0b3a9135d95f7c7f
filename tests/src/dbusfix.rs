//! A private D-Bus system bus for the D-Bus service tests
//! (tests/tests/dbus.rs): a real `dbus-daemon` started on a socket in a
//! temp dir with a config that mirrors Debian's
//! /usr/share/dbus-1/system.conf default policy (deny owning names and
//! method calls, allow replies and signals) and includes the shipped
//! policy packaging/dbus/org.slotctl.Updater1.conf; the real
//! `slotctl-dbus` serving on it as root, passing `--disk`, `--config`,
//! `--booted A` of an install fixture to every `slotctl` it runs. Both are
//! killed by their pid when the [`Bus`] is dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use zbus::blocking::{Connection, MessageIterator};
use zbus::message::Type;
use zbus::zvariant::{OwnedValue, Value};
use zbus::MatchRule;

use crate::installfix::Fix;
use crate::{require_tool, slotctl_bin};

pub const NAME: &str = "org.slotctl.Updater1";
pub const PATH: &str = "/org/slotctl/Updater1";

/// The shipped policy file.
pub fn policy_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/dbus/org.slotctl.Updater1.conf")
}

/// The slotctl-dbus binary next to slotctl.
pub fn service_bin() -> PathBuf {
    let bin = slotctl_bin().with_file_name("slotctl-dbus");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p slotctl-dbus` first",
        bin.display()
    );
    bin
}

fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
        socket = socket.display(),
        policy = policy_file().canonicalize().unwrap().display()
    )
}

/// The bus, the service, and a root client connection.
pub struct Bus {
    pub dir: tempfile::TempDir,
    pub address: String,
    daemon: Child,
    service: Option<Child>,
    pub conn: Option<Connection>,
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.conn.take();
        if let Some(s) = &mut self.service {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

impl Bus {
    /// Start dbus-daemon, then slotctl-dbus for `fix` (booted A), and wait
    /// until the service owns its name.
    pub fn start(fix: &Fix) -> Bus {
        require_tool("dbus-daemon");
        let dir = tempfile::tempdir().unwrap();
        // The unprivileged caller must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = dir.path().join("bus.conf");
        std::fs::write(&cfg, bus_config(&dir.path().join("bus"))).unwrap();
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", cfg.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dbus-daemon");
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {line:?}");
        let mut bus = Bus {
            dir,
            address,
            daemon,
            service: None,
            conn: None,
        };
        let service = Command::new(service_bin())
            .arg("--address")
            .arg(&bus.address)
            .arg("--slotctl")
            .arg(slotctl_bin())
            .arg("--disk")
            .arg(&fix.disk)
            .arg("--config")
            .arg(&fix.config)
            .args(["--booted", "A"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn slotctl-dbus");
        bus.service = Some(service);
        let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .build()
            .expect("connect to the test bus");
        let dbus = zbus::blocking::fdo::DBusProxy::new(&conn).unwrap();
        let t = Instant::now();
        while !dbus.name_has_owner(NAME.try_into().unwrap()).unwrap() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "slotctl-dbus did not take its name"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bus.conn = Some(conn);
        bus
    }

    pub fn conn(&self) -> &Connection {
        self.conn.as_ref().unwrap()
    }

    /// Call `method` of org.slotctl.Updater1 as root: the reply, or the
    /// error's (name, message).
    pub fn call<B>(&self, method: &str, body: &B) -> Result<zbus::Message, (String, String)>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn()
            .call_method(Some(NAME), PATH, Some(NAME), method, body)
            .map_err(|e| match e {
                zbus::Error::MethodError(name, desc, _) => {
                    (name.to_string(), desc.unwrap_or_default())
                }
                other => panic!("{method}: not a D-Bus error reply: {other}"),
            })
    }

    /// A method returning one string (GetStatus, GetAgentState).
    pub fn call_string(&self, method: &str) -> String {
        let reply = self
            .call(method, &())
            .unwrap_or_else(|e| panic!("{method}: {e:?}"));
        reply.body().deserialize::<String>().unwrap()
    }

    /// `Install(source, options)`.
    pub fn install(
        &self,
        source: &str,
        options: &[(&str, Value<'_>)],
    ) -> Result<(), (String, String)> {
        let opts: HashMap<&str, &Value<'_>> = options.iter().map(|(k, v)| (*k, v)).collect();
        self.call("Install", &(source, opts)).map(drop)
    }

    /// A property's value.
    pub fn property(&self, name: &str) -> OwnedValue {
        let reply = self
            .conn()
            .call_method(
                Some(NAME),
                PATH,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(NAME, name),
            )
            .unwrap();
        reply.body().deserialize::<OwnedValue>().unwrap()
    }

    /// Every signal the service sends from now on, in order.
    pub fn signals(&self) -> Receiver<zbus::Message> {
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .path(PATH)
            .unwrap()
            .build();
        let it = MessageIterator::for_match_rule(rule, self.conn(), Some(10_000)).unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for m in it {
                let Ok(m) = m else { break };
                if tx.send(m).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// `busctl call` as the unprivileged user 65534 (nobody), no groups.
    pub fn busctl_as_nobody(&self, args: &[&str]) -> Output {
        require_tool("setpriv");
        require_tool("busctl");
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"])
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .expect("spawn setpriv busctl")
    }
}
