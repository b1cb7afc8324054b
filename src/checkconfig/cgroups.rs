//! The cgroup hierarchy (v1, hybrid or v2) and the controllers pods need.
//!
//! Read from `/proc/self/cgroup` (which v1 hierarchies this process is in, and whether the v2
//! one is mounted), `/proc/cgroups` (which controllers the kernel has, and whether the
//! kernel command line disabled one: `enabled` 0) and `/sys/fs/cgroup/cgroup.controllers` (what
//! the v2 root offers). A disabled controller's fix names the boot file to edit: on a Raspberry
//! Pi `cmdline.txt` in the boot partition (`/boot/firmware` on Bookworm images, `/boot` on
//! older ones), elsewhere the kernel command line in GRUB's settings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{Check, Host, Status};

/// The controllers `skiff check-config` checks, in order.
pub const CONTROLLERS: &[&str] = &["memory", "cpu", "pids", "cpuset"];

/// The controllers without which the agent does not start: pods' memory limits, CPU shares
/// and quotas, and process limits all live in them.
pub const FATAL_CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

/// Where a Raspberry Pi's firmware names its model (the device tree, both mounts of it).
const PI_MODEL_FILES: &[&str] = &["/proc/device-tree/model", "/sys/firmware/devicetree/base/model"];
/// The Pi's kernel command line file: Bookworm's boot partition, then older images'.
const PI_CMDLINE_FILES: &[&str] = &["/boot/firmware/cmdline.txt", "/boot/cmdline.txt"];

/// Which cgroup hierarchies are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Controllers on v1 hierarchies; `hybrid` when the v2 one is mounted beside them.
    V1 { hybrid: bool },
    /// Every controller on the unified v2 hierarchy.
    V2,
}

/// One line of `/proc/cgroups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Subsys {
    hierarchy: u32,
    enabled: bool,
}

/// What the host says about its cgroups.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    mode: Option<Mode>,
    /// Controllers on a v1 hierarchy this process is in.
    v1: BTreeSet<String>,
    /// What the v2 root offers (`cgroup.controllers`), when v2 is the whole hierarchy.
    v2: Option<BTreeSet<String>>,
    /// `/proc/cgroups`, when readable.
    subsys: Option<BTreeMap<String, Subsys>>,
    /// Why the hierarchy is unknown, when it is.
    unreadable: Option<String>,
}

impl Cgroups {
    /// Reads the three files.
    pub fn read(host: &dyn Host) -> Cgroups {
        let mut cg = Cgroups::default();
        let mut unified_line = false;
        match host.read_text(Path::new("/proc/self/cgroup")) {
            Ok(text) => {
                for line in text.lines() {
                    let mut parts = line.splitn(3, ':');
                    let (Some(id), Some(controllers)) = (parts.next(), parts.next()) else { continue };
                    if id == "0" && controllers.is_empty() {
                        unified_line = true;
                        continue;
                    }
                    for c in controllers.split(',').filter(|c| !c.is_empty() && !c.starts_with("name=")) {
                        cg.v1.insert(c.to_string());
                    }
                }
            }
            Err(e) => cg.unreadable = Some(format!("cannot read /proc/self/cgroup: {e}")),
        }
        let v2_root = host.read_text(Path::new("/sys/fs/cgroup/cgroup.controllers")).ok();
        cg.mode = if !cg.v1.is_empty() {
            Some(Mode::V1 { hybrid: unified_line })
        } else if unified_line || v2_root.is_some() {
            Some(Mode::V2)
        } else {
            None
        };
        if cg.mode == Some(Mode::V2) {
            cg.v2 = Some(v2_root.unwrap_or_default().split_whitespace().map(str::to_string).collect());
        }
        if let Ok(text) = host.read_text(Path::new("/proc/cgroups")) {
            let mut map = BTreeMap::new();
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [name, hierarchy, _, enabled] = f[..] {
                    map.insert(
                        name.to_string(),
                        Subsys { hierarchy: hierarchy.parse().unwrap_or(0), enabled: enabled == "1" },
                    );
                }
            }
            cg.subsys = Some(map);
        }
        cg
    }

    /// Which hierarchies are mounted, if any.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// The `cgroup hierarchy` check.
    pub fn hierarchy(&self) -> Check {
        const NAME: &str = "cgroup hierarchy";
        match self.mode {
            Some(Mode::V1 { hybrid: false }) => Check::pass(NAME, "v1"),
            Some(Mode::V1 { hybrid: true }) => Check::pass(NAME, "v1, with v2 mounted beside it (hybrid)"),
            Some(Mode::V2) => Check::pass(NAME, "v2 (unified)"),
            None => match &self.unreadable {
                Some(why) => Check::warn(NAME, format!("cannot tell: {why}"), None),
                None => Check::fail(
                    NAME,
                    "none mounted",
                    "mount cgroup v2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup), or boot with systemd, which does",
                ),
            },
        }
    }

    /// The `cgroup <controller> controller` check. Only the [`FATAL_CONTROLLERS`] fail; skiff
    /// pins no CPUs, so a missing cpuset controller is worth a warning only.
    pub fn controller(&self, host: &dyn Host, controller: &str) -> Check {
        let mut check = self.controller_state(host, controller);
        if check.status == Status::Fail && !FATAL_CONTROLLERS.contains(&controller) {
            check.status = Status::Warn;
        }
        check
    }

    fn controller_state(&self, host: &dyn Host, controller: &str) -> Check {
        let name = format!("cgroup {controller} controller");
        let subsys = self.subsys.as_ref().map(|m| m.get(controller).copied());
        let mode = match self.mode {
            Some(m) => m,
            None => {
                return match &self.unreadable {
                    Some(why) => Check::warn(name, format!("cannot tell: {why}"), None),
                    None => Check::fail(name, "no cgroup hierarchy is mounted", "see \"cgroup hierarchy\""),
                };
            }
        };
        let present = match mode {
            Mode::V1 { .. } => self.v1.contains(controller),
            Mode::V2 => self.v2.as_ref().is_some_and(|s| s.contains(controller)),
        };
        if present {
            let version = if mode == Mode::V2 { "v2" } else { "v1" };
            return Check::pass(name, format!("enabled ({version})"));
        }
        match subsys {
            Some(Some(Subsys { enabled: false, .. })) => Check::fail(name, "disabled", enable_hint(host, controller)),
            Some(None) => Check::fail(
                name,
                format!("not in this kernel ({})", kernel_option(controller)),
                format!("use a kernel built with {}", kernel_option(controller)),
            ),
            Some(Some(Subsys { hierarchy, .. })) if mode == Mode::V2 && hierarchy != 0 => Check::fail(
                name,
                "held by a cgroup v1 hierarchy, so cgroup v2 cannot use it",
                format!(
                    "add \"cgroup_no_v1={controller}\" to the kernel command line (or \"cgroup_no_v1=all\") and reboot"
                ),
            ),
            _ if mode == Mode::V2 => {
                Check::fail(name, "not offered by /sys/fs/cgroup/cgroup.controllers", enable_hint(host, controller))
            }
            _ => Check::fail(
                name,
                "enabled but not mounted",
                format!(
                    "mount it (mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}), or boot with \"systemd.unified_cgroup_hierarchy=1\" to use cgroup v2"
                ),
            ),
        }
    }
}

/// The kernel option that provides a controller.
fn kernel_option(controller: &str) -> &'static str {
    match controller {
        "memory" => "CONFIG_MEMCG",
        "cpu" => "CONFIG_CGROUP_SCHED",
        "pids" => "CONFIG_CGROUP_PIDS",
        "cpuset" => "CONFIG_CPUSETS",
        _ => "CONFIG_CGROUPS",
    }
}

/// Whether this box is a Raspberry Pi, by the model its firmware reports.
pub fn is_raspberry_pi(host: &dyn Host) -> bool {
    PI_MODEL_FILES.iter().any(|f| host.read_text(Path::new(f)).is_ok_and(|m| m.starts_with("Raspberry Pi")))
}

/// How to switch a disabled controller on at boot.
fn enable_hint(host: &dyn Host, controller: &str) -> String {
    let words = match controller {
        // The Pi kernel keeps memory off unless cgroup_memory=1; cgroup_enable=memory
        // overrides the firmware's cgroup_disable=memory.
        "memory" if is_raspberry_pi(host) => "cgroup_memory=1 cgroup_enable=memory".to_string(),
        _ => format!("cgroup_enable={controller}"),
    };
    if is_raspberry_pi(host) {
        let file = PI_CMDLINE_FILES.iter().find(|f| host.exists(Path::new(f))).copied();
        return match file {
            Some(f) => format!("add \"{words}\" to {f} and reboot"),
            None => format!(
                "add \"{words}\" to cmdline.txt in the boot partition (/boot/firmware/cmdline.txt, /boot/cmdline.txt on older images) and reboot"
            ),
        };
    }
    format!(
        "add \"{words}\" to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot"
    )
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::super::testing::*;
    use super::*;

    fn lines(f: &Fixture) -> Vec<String> {
        let cg = Cgroups::read(f);
        let mut out = vec![render(&cg.hierarchy())];
        out.extend(CONTROLLERS.iter().map(|c| render(&cg.controller(f, c))));
        out
    }

    #[test]
    fn pi_v1_memory_disabled_names_the_bookworm_cmdline() {
        let f = pi_v1_memory_disabled();
        f.file("/boot/firmware/cmdline.txt", "console=serial0,115200 root=PARTUUID=x rootwait\n");
        f.file("/boot/cmdline.txt", "see firmware/cmdline.txt\n");
        assert_eq!(
            lines(&f),
            vec![
                "pass  cgroup hierarchy: v1, with v2 mounted beside it (hybrid)",
                "FAIL  cgroup memory controller: disabled; add \"cgroup_memory=1 cgroup_enable=memory\" to /boot/firmware/cmdline.txt and reboot",
                "pass  cgroup cpu controller: enabled (v1)",
                "pass  cgroup pids controller: enabled (v1)",
                "pass  cgroup cpuset controller: enabled (v1)",
            ]
        );
    }

    #[test]
    fn pi_v1_memory_disabled_on_an_older_image_names_boot_cmdline() {
        let f = pi_v1_memory_disabled();
        f.file("/boot/cmdline.txt", "console=serial0,115200 root=PARTUUID=x rootwait\n");
        assert_eq!(
            render(&Cgroups::read(&f).controller(&f, "memory")),
            "FAIL  cgroup memory controller: disabled; add \"cgroup_memory=1 cgroup_enable=memory\" to /boot/cmdline.txt and reboot"
        );
    }

    #[test]
    fn a_disabled_cpuset_controller_only_warns() {
        let f = pi_v1_memory_disabled();
        f.file("/boot/cmdline.txt", "");
        f.file("/proc/cgroups", PI_V1_PROC_CGROUPS.replace("cpuset\t2\t1\t1", "cpuset\t0\t1\t0"));
        f.file("/proc/self/cgroup", PI_V1_SELF_CGROUP.replace("2:cpuset:/\n", ""));
        assert_eq!(
            render(&Cgroups::read(&f).controller(&f, "cpuset")),
            "warn  cgroup cpuset controller: disabled; add \"cgroup_enable=cpuset\" to /boot/cmdline.txt and reboot"
        );
    }

    #[test]
    fn pi_without_a_boot_partition_names_both_places() {
        let f = pi_v1_memory_disabled();
        assert_eq!(
            render(&Cgroups::read(&f).controller(&f, "memory")),
            "FAIL  cgroup memory controller: disabled; add \"cgroup_memory=1 cgroup_enable=memory\" to cmdline.txt in the boot partition (/boot/firmware/cmdline.txt, /boot/cmdline.txt on older images) and reboot"
        );
    }

    #[test]
    fn the_pi_is_recognised_by_either_device_tree_path() {
        let f = Fixture::empty();
        f.file("/proc/cgroups", PI_V1_PROC_CGROUPS).file("/proc/self/cgroup", PI_V1_SELF_CGROUP);
        f.file("/sys/firmware/devicetree/base/model", "Raspberry Pi 3 Model B Plus Rev 1.3\0");
        f.file("/boot/firmware/cmdline.txt", "");
        assert!(render(&Cgroups::read(&f).controller(&f, "memory")).contains("to /boot/firmware/cmdline.txt"));
    }

    #[test]
    fn other_hosts_get_the_generic_kernel_command_line() {
        let f = Fixture::empty();
        f.file("/proc/cgroups", PI_V1_PROC_CGROUPS).file("/proc/self/cgroup", PI_V1_SELF_CGROUP);
        f.file("/proc/device-tree/model", "Pine64 RockPro64 v2.1\0");
        f.file("/boot/firmware/cmdline.txt", "");
        assert_eq!(
            render(&Cgroups::read(&f).controller(&f, "memory")),
            "FAIL  cgroup memory controller: disabled; add \"cgroup_enable=memory\" to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot"
        );
    }

    #[test]
    fn v1_with_every_controller_passes() {
        assert_eq!(
            lines(&v1_host()),
            vec![
                "pass  cgroup hierarchy: v1, with v2 mounted beside it (hybrid)",
                "pass  cgroup memory controller: enabled (v1)",
                "pass  cgroup cpu controller: enabled (v1)",
                "pass  cgroup pids controller: enabled (v1)",
                "pass  cgroup cpuset controller: enabled (v1)",
            ]
        );
    }

    #[test]
    fn v1_without_the_unified_line_is_plain_v1() {
        let f = Fixture::empty();
        f.file("/proc/self/cgroup", "2:memory:/\n1:cpu,cpuacct:/\n");
        assert_eq!(render(&Cgroups::read(&f).hierarchy()), "pass  cgroup hierarchy: v1");
        // Without /proc/cgroups the missing pids controller is "not mounted".
        assert_eq!(
            render(&Cgroups::read(&f).controller(&f, "pids")),
            "FAIL  cgroup pids controller: enabled but not mounted; mount it (mount -t cgroup -o pids cgroup /sys/fs/cgroup/pids), or boot with \"systemd.unified_cgroup_hierarchy=1\" to use cgroup v2"
        );
    }

    #[test]
    fn v2_with_every_controller_passes() {
        assert_eq!(
            lines(&v2_host("cpuset cpu io memory hugetlb pids rdma misc")),
            vec![
                "pass  cgroup hierarchy: v2 (unified)",
                "pass  cgroup memory controller: enabled (v2)",
                "pass  cgroup cpu controller: enabled (v2)",
                "pass  cgroup pids controller: enabled (v2)",
                "pass  cgroup cpuset controller: enabled (v2)",
            ]
        );
    }

    #[test]
    fn v2_without_memory_in_the_controllers() {
        let f = v2_host("cpuset cpu io hugetlb pids rdma misc");
        assert_eq!(
            render(&Cgroups::read(&f).controller(&f, "memory")),
            "FAIL  cgroup memory controller: not offered by /sys/fs/cgroup/cgroup.controllers; add \"cgroup_enable=memory\" to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot"
        );
        assert_eq!(render(&Cgroups::read(&f).controller(&f, "cpu")), "pass  cgroup cpu controller: enabled (v2)");
    }

    #[test]
    fn pi_v2_with_memory_disabled() {
        // Raspberry Pi OS Bookworm: cgroup v2, the firmware's cgroup_disable=memory.
        let f = v2_host("cpuset cpu io pids");
        f.file("/proc/cgroups", V2_PROC_CGROUPS.replace("memory\t0\t120\t1", "memory\t0\t120\t0"));
        f.file("/proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0\0");
        f.file("/boot/firmware/cmdline.txt", "console=tty1 root=PARTUUID=x rootwait\n");
        assert_eq!(
            render(&Cgroups::read(&f).controller(&f, "memory")),
            "FAIL  cgroup memory controller: disabled; add \"cgroup_memory=1 cgroup_enable=memory\" to /boot/firmware/cmdline.txt and reboot"
        );
        // Without /proc/cgroups, the missing controller alone tells.
        std::fs::remove_file(f.local("/proc/cgroups")).unwrap();
        assert_eq!(
            render(&Cgroups::read(&f).controller(&f, "memory")),
            "FAIL  cgroup memory controller: not offered by /sys/fs/cgroup/cgroup.controllers; add \"cgroup_memory=1 cgroup_enable=memory\" to /boot/firmware/cmdline.txt and reboot"
        );
    }

    #[test]
    fn v2_controller_held_by_v1_and_a_kernel_without_one() {
        let f = v2_host("cpuset cpu io memory");
        f.file(
            "/proc/cgroups",
            V2_PROC_CGROUPS.replace("pids\t0\t120\t1", "pids\t3\t120\t1").replace("cpuset\t0\t120\t1\n", ""),
        );
        f.file("/sys/fs/cgroup/cgroup.controllers", "cpu io memory\n");
        let cg = Cgroups::read(&f);
        assert_eq!(
            render(&cg.controller(&f, "pids")),
            "FAIL  cgroup pids controller: held by a cgroup v1 hierarchy, so cgroup v2 cannot use it; add \"cgroup_no_v1=pids\" to the kernel command line (or \"cgroup_no_v1=all\") and reboot"
        );
        assert_eq!(
            render(&cg.controller(&f, "cpuset")),
            "warn  cgroup cpuset controller: not in this kernel (CONFIG_CPUSETS); use a kernel built with CONFIG_CPUSETS"
        );
    }

    #[test]
    fn nothing_mounted_and_nothing_readable() {
        let f = Fixture::empty();
        let cg = Cgroups::read(&f);
        assert_eq!(
            render(&cg.hierarchy()),
            "warn  cgroup hierarchy: cannot tell: cannot read /proc/self/cgroup: No such file or directory (os error 2)"
        );
        assert_eq!(
            render(&cg.controller(&f, "memory")),
            "warn  cgroup memory controller: cannot tell: cannot read /proc/self/cgroup: No such file or directory (os error 2)"
        );
        f.file("/proc/self/cgroup", "");
        let cg = Cgroups::read(&f);
        assert_eq!(
            render(&cg.hierarchy()),
            "FAIL  cgroup hierarchy: none mounted; mount cgroup v2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup), or boot with systemd, which does"
        );
        assert_eq!(
            render(&cg.controller(&f, "cpu")),
            "FAIL  cgroup cpu controller: no cgroup hierarchy is mounted; see \"cgroup hierarchy\""
        );
    }
}
