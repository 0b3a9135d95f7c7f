//! Which roles of a slot an image, or a slot's record, must cover.
//!
//! The rule (docs/image-format.md, "Roles: an image covers its slot"): an
//! image carries a payload for EVERY role of the target slot, except the
//! roles the config names in `unmanaged_roles`; slotctl never writes nor
//! verifies those (their content is the operator's business) and an image
//! that carries one is refused. So a slot is never made bootable while one of
//! its managed partitions holds bytes no verified image put there (say, the
//! BOOT bytes of a tampered image refused after they were written): an
//! install of an image lacking a managed role is refused before any write,
//! and `activate` and `rollback` refuse a slot whose record does not cover
//! every managed role. `verify-slot` and `status` report the coverage.

use boot_flags::{Slot, SlotId};
use image_format::PayloadInfo;
use serde_json::{json, Value};

use crate::config::Config;
use crate::exit::refused;

/// What carries the payloads being checked: an image about to be installed,
/// or the record of a slot about to be made bootable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Of {
    Image,
    Record,
}

/// How a slot's roles are accounted for, each list in the slot's table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub slot: SlotId,
    /// Roles the image or record carries (hash-checked when written/verified).
    pub covered: Vec<String>,
    /// Roles the config names in `unmanaged_roles` and the payloads do not
    /// carry: never written nor verified by slotctl.
    pub unmanaged: Vec<String>,
    /// Managed roles the payloads do not carry: their bytes are unaccounted for.
    pub missing: Vec<String>,
}

impl Coverage {
    /// Account for each role of `slot` given the roles `carried` (roles
    /// carried that the slot lacks are not this function's business: the
    /// callers refuse them on their own).
    pub fn of<'a>(
        slot: &Slot,
        carried: impl IntoIterator<Item = &'a str> + Clone,
        cfg: &Config,
    ) -> Coverage {
        let mut c = Coverage {
            slot: slot.id,
            covered: Vec::new(),
            unmanaged: Vec::new(),
            missing: Vec::new(),
        };
        for role in slot.roles() {
            let list = if carried.clone().into_iter().any(|r| r == role) {
                &mut c.covered
            } else if cfg.unmanaged_roles.iter().any(|r| r == role) {
                &mut c.unmanaged
            } else {
                &mut c.missing
            };
            list.push(role.to_string());
        }
        c
    }

    /// `verb: BOOT, ROOT; not managed: DATA; NOT covered: HASH` (empty parts
    /// left out; `verb: none` when nothing is covered).
    pub fn describe(&self, verb: &str) -> String {
        let mut s = format!(
            "{verb}: {}",
            if self.covered.is_empty() {
                "none".to_string()
            } else {
                self.covered.join(", ")
            }
        );
        if !self.unmanaged.is_empty() {
            s.push_str(&format!("; not managed: {}", self.unmanaged.join(", ")));
        }
        if !self.missing.is_empty() {
            s.push_str(&format!("; NOT covered: {}", self.missing.join(", ")));
        }
        s
    }

    /// `{"covered": [...], "not_managed": [...], "not_covered": [...]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "covered": self.covered,
            "not_managed": self.unmanaged,
            "not_covered": self.missing,
        })
    }
}

/// The partition names of `roles` on `slot` ("BOOT-B, HASH-B").
fn names(slot: &Slot, roles: &[String]) -> String {
    roles
        .iter()
        .map(|r| slot.partition(r).map_or(r.as_str(), |p| p.name.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuse (exit 3, one line) unless `payloads` cover every managed role of
/// `slot`, and (for an image) carry no role the config leaves unmanaged.
pub fn check_coverage(
    slot: &Slot,
    payloads: &[PayloadInfo],
    cfg: &Config,
    of: Of,
) -> anyhow::Result<Coverage> {
    let roles: Vec<&str> = payloads.iter().map(|p| p.role.as_str()).collect();
    check_roles(slot, &roles, cfg, of)
}

/// [`check_coverage`] on role names.
fn check_roles(slot: &Slot, roles: &[&str], cfg: &Config, of: Of) -> anyhow::Result<Coverage> {
    let id = slot.id;
    if of == Of::Image {
        if let Some(r) = roles
            .iter()
            .find(|r| cfg.unmanaged_roles.iter().any(|u| u == *r))
        {
            return Err(refused(format!(
                "image carries role {r}, which the config names in unmanaged_roles (slotctl never writes those): drop {r} from unmanaged_roles or from the image"
            )));
        }
    }
    let c = Coverage::of(slot, roles.iter().copied(), cfg);
    if c.missing.is_empty() {
        return Ok(c);
    }
    let (s, them) = if c.missing.len() == 1 {
        ("", "it")
    } else {
        ("s", "them")
    };
    let missing = c.missing.join(", ");
    let parts = names(slot, &c.missing);
    Err(refused(match of {
        Of::Image => format!(
            "image carries no payload for role{s} {missing} of slot {id} ({parts}): an image must cover every role of its slot; carry {them} in the image, or name {them} in the config's unmanaged_roles"
        ),
        Of::Record => format!(
            "slot {id}'s record does not cover role{s} {missing} ({parts}): no verified image put those bytes there; install an image that carries {them}, or name {them} in the config's unmanaged_roles"
        ),
    }))
}

/// For `status`: how a slot's record, as [`crate::install::policy::installed`]
/// read it (without a keyring: the record's own CRC and SHA-256 guard it;
/// signatures are the policy checks' and `verify-slot`'s business), covers
/// the slot's roles (without a record no managed role is covered), or why
/// the record cannot be read.
pub fn record_coverage(
    slot: &Slot,
    held: &anyhow::Result<Option<crate::install::policy::Installed>>,
    cfg: &Config,
) -> Result<Coverage, String> {
    let roles = match held {
        Ok(Some(i)) => i.roles.as_slice(),
        Ok(None) => &[],
        Err(e) => return Err(format!("{e:#}")),
    };
    Ok(Coverage::of(slot, roles.iter().map(String::as_str), cfg))
}

#[cfg(test)]
mod tests {
    use boot_flags::SlotPartition;

    use super::*;

    fn slot(roles: &[&str]) -> Slot {
        Slot {
            id: SlotId::B,
            partitions: roles
                .iter()
                .enumerate()
                .map(|(i, r)| SlotPartition {
                    role: r.to_string(),
                    index: 2 * i as u32 + 2,
                    name: format!("{r}-B"),
                    offset: 0,
                    size: 1 << 20,
                })
                .collect(),
            flags_index: 2,
        }
    }

    fn cfg(unmanaged: &[&str]) -> Config {
        Config {
            unmanaged_roles: unmanaged.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        }
    }

    fn err(r: anyhow::Result<Coverage>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn every_role_sorted_into_one_list_in_table_order() {
        let s = slot(&["BOOT", "ROOT", "HASH", "DATA"]);
        let c = Coverage::of(&s, ["ROOT", "BOOT", "OTHER"], &cfg(&["DATA"]));
        assert_eq!(c.covered, ["BOOT", "ROOT"]);
        assert_eq!(c.unmanaged, ["DATA"]);
        assert_eq!(c.missing, ["HASH"]);
        assert_eq!(
            c.describe("verified"),
            "verified: BOOT, ROOT; not managed: DATA; NOT covered: HASH"
        );
        let none = Coverage::of(&s, [], &cfg(&[]));
        assert_eq!(
            none.describe("record covers"),
            "record covers: none; NOT covered: BOOT, ROOT, HASH, DATA"
        );
    }

    #[test]
    fn a_missing_managed_role_is_refused_with_its_partition_and_the_fixes() {
        let s = slot(&["BOOT", "ROOT", "HASH"]);
        let e = err(check_roles(&s, &["ROOT"], &cfg(&[]), Of::Image));
        assert_eq!(
            e,
            "image carries no payload for roles BOOT, HASH of slot B (BOOT-B, HASH-B): an image must cover every role of its slot; carry them in the image, or name them in the config's unmanaged_roles"
        );
        let e = err(check_roles(&s, &["ROOT", "BOOT"], &cfg(&[]), Of::Record));
        assert_eq!(
            e,
            "slot B's record does not cover role HASH (HASH-B): no verified image put those bytes there; install an image that carries it, or name it in the config's unmanaged_roles"
        );
        let ok = check_roles(&s, &["ROOT"], &cfg(&["BOOT", "HASH"]), Of::Record).unwrap();
        assert!(ok.missing.is_empty() && ok.unmanaged == ["BOOT", "HASH"]);
    }

    #[test]
    fn an_image_carrying_an_unmanaged_role_is_refused_a_record_is_not() {
        let s = slot(&["BOOT", "ROOT"]);
        let e = err(check_roles(
            &s,
            &["BOOT", "ROOT"],
            &cfg(&["BOOT"]),
            Of::Image,
        ));
        assert!(
            e.starts_with("image carries role BOOT, which the config names in unmanaged_roles"),
            "{e}"
        );
        let c = check_roles(&s, &["BOOT", "ROOT"], &cfg(&["BOOT"]), Of::Record).unwrap();
        assert_eq!(c.covered, ["BOOT", "ROOT"]);
        assert!(c.unmanaged.is_empty());
    }
}
