//! Image garbage collection, as upstream's kubelet does it: at start and every 5 minutes, when
//! the image file system is at least `image-gc-high-threshold` percent full, images no
//! container uses (running or exited) are removed, least recently used first, until it is down
//! to `image-gc-low-threshold` percent. Images younger than `minimum-image-ttl-duration` stay.
//!
//! Pinned images never go: the pause image, and every image imported from an archive (the
//! images folder or `skiff images import`), which carry containerd's
//! `io.cri-containerd.pinned` label. On a box without a registry they could not come back.
//!
//! [`plan`] decides from plain data; [`run`] gathers it over CRI and acts.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cri::CriClient;
use crate::cri::proto::{ImageFsInfoRequest, ListContainersRequest, ListImagesRequest, RemoveImageRequest};
use crate::runtime::events::{EventType, Recorder};

/// How often the image file system is looked at (upstream's `ImageGCPeriod`).
const PERIOD: Duration = Duration::from_secs(300);

/// An image the runtime holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub size: u64,
    pub pinned: bool,
    /// When this agent first saw it, or last saw a container use it.
    pub last_used: Instant,
    pub first_seen: Instant,
}

/// How much to free: the bytes above `low` percent when usage is at or above `high` percent.
pub fn amount_to_free(capacity: u64, available: u64, high: u8, low: u8) -> u64 {
    if capacity == 0 || high >= 100 {
        return 0;
    }
    let used_percent = (capacity - available.min(capacity)) as u128 * 100 / capacity as u128;
    if used_percent < high as u128 {
        return 0;
    }
    let target_available = capacity as u128 * (100 - low as u128) / 100;
    target_available.saturating_sub(available as u128) as u64
}

/// The images to remove, in order, to free `amount` bytes: unused, unpinned, older than
/// `min_age`, least recently used first. Returns them and the bytes they free.
pub fn plan(
    images: &[Candidate],
    in_use: &HashSet<String>,
    amount: u64,
    min_age: Duration,
    now: Instant,
) -> (Vec<String>, u64) {
    let mut eligible: Vec<&Candidate> = images
        .iter()
        .filter(|c| !c.pinned && !in_use.contains(&c.id) && now.duration_since(c.first_seen) >= min_age)
        .collect();
    eligible.sort_by_key(|c| (c.last_used, c.first_seen));
    let mut freed = 0;
    let mut out = Vec::new();
    for c in eligible {
        if freed >= amount {
            break;
        }
        out.push(c.id.clone());
        freed += c.size;
    }
    (out, freed)
}

/// What the collector remembers between rounds.
#[derive(Default)]
struct Seen {
    first: HashMap<String, Instant>,
    used: HashMap<String, Instant>,
}

/// One round: measure, and remove what the plan names. Returns the bytes freed.
async fn collect(
    cri: &CriClient,
    seen: &mut Seen,
    settings: &super::config::KubeletSettings,
    pause_image: &str,
) -> Result<(u64, u64), String> {
    let fs = cri
        .images()
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .image_filesystems
        .into_iter()
        .next()
        .and_then(|f| f.fs_id)
        .map(|id| id.mountpoint)
        .ok_or("the runtime reports no image file system")?;
    let usage = super::host::usage(Path::new(&fs));
    let images =
        cri.images().list_images(ListImagesRequest { filter: None }).await.map_err(|e| e.message().to_string())?;
    let containers = cri
        .runtime()
        .list_containers(ListContainersRequest { filter: None })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .containers;
    let now = Instant::now();
    let in_use: HashSet<String> = containers.iter().map(|c| c.image_ref.clone()).collect();
    let images = images.into_inner().images;
    let live: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
    seen.first.retain(|id, _| live.contains(id.as_str()));
    seen.used.retain(|id, _| live.contains(id.as_str()));
    let names: Vec<String> = images
        .iter()
        .filter(|i| !in_use.contains(&i.id))
        .flat_map(|i| i.repo_tags.iter().chain(&i.repo_digests).cloned())
        .collect();
    let pinned_names = crate::cri::images::pinned(cri, &names).await;
    let mut candidates = Vec::new();
    for i in &images {
        let first = *seen.first.entry(i.id.clone()).or_insert(now);
        if in_use.contains(&i.id) {
            seen.used.insert(i.id.clone(), now);
        }
        let pinned = i.pinned
            || i.repo_tags.iter().any(|t| t == pause_image || pinned_names.contains(t))
            || i.repo_digests.iter().any(|d| pinned_names.contains(d));
        candidates.push(Candidate {
            id: i.id.clone(),
            size: i.size,
            pinned,
            last_used: seen.used.get(&i.id).copied().unwrap_or(first),
            first_seen: first,
        });
    }
    let amount = amount_to_free(
        usage.fs_capacity,
        usage.fs_available,
        settings.image_gc_high_threshold,
        settings.image_gc_low_threshold,
    );
    if amount == 0 {
        return Ok((0, 0));
    }
    let (remove, _) = plan(&candidates, &in_use, amount, settings.image_minimum_gc_age, now);
    let mut freed = 0;
    for id in remove {
        match cri
            .images()
            .remove_image(RemoveImageRequest {
                image: Some(crate::cri::proto::ImageSpec { image: id.clone(), ..Default::default() }),
            })
            .await
        {
            Ok(_) => {
                freed += candidates.iter().find(|c| c.id == id).map(|c| c.size).unwrap_or(0);
                seen.first.remove(&id);
                seen.used.remove(&id);
                tracing::info!(image = %id, "removed unused image");
            }
            Err(e) => tracing::warn!(image = %id, error = %e.message(), "cannot remove unused image"),
        }
    }
    Ok((amount, freed))
}

/// Collects images at start and every 5 minutes until `cancel` fires; a shortfall is
/// reported as upstream does, with a `FreeDiskSpaceFailed` event on the node.
pub async fn run(
    cri: CriClient,
    recorder: Recorder,
    node: k8s_openapi::api::core::v1::ObjectReference,
    settings: super::config::KubeletSettings,
    cancel: CancellationToken,
) {
    let mut seen = Seen::default();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match collect(&cri, &mut seen, &settings, crate::cri::pause::IMAGE).await {
            Ok((amount, freed)) if freed < amount => recorder.record_ref(
                node.clone(),
                EventType::Warning,
                "FreeDiskSpaceFailed",
                format!(
                    "Failed to garbage collect required amount of images. Attempted to free {amount} bytes, but only found {freed} bytes eligible to free."
                ),
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frees_down_to_the_low_threshold_only_above_the_high_one() {
        // 100 GiB, 10 GiB free: 90 % used, above 85; down to 80 % means 20 GiB free.
        let gib = 1u64 << 30;
        assert_eq!(amount_to_free(100 * gib, 10 * gib, 85, 80), 10 * gib);
        assert_eq!(amount_to_free(100 * gib, 20 * gib, 85, 80), 0, "80 % used is below 85");
        assert_eq!(amount_to_free(100 * gib, 0, 100, 80), 0, "100 disables collection");
        assert_eq!(amount_to_free(0, 0, 85, 80), 0);
        assert_eq!(amount_to_free(100, 100, 0, 0), 0, "all free already");
        assert_eq!(amount_to_free(100, 40, 0, 0), 60);
    }

    #[test]
    fn least_recently_used_unpinned_unused_and_old_enough_go_first() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(600);
        let img = |id: &str, size, pinned, used: u64, first: u64| Candidate {
            id: id.into(),
            size,
            pinned,
            last_used: t0 + Duration::from_secs(used),
            first_seen: t0 + Duration::from_secs(first),
        };
        let images = vec![
            img("recent", 10, false, 500, 0),
            img("old", 10, false, 100, 0),
            img("pinned", 100, true, 0, 0),
            img("busy", 100, false, 0, 0),
            img("young", 100, false, 590, 590),
        ];
        let in_use: HashSet<String> = ["busy".to_string()].into();
        let min_age = Duration::from_secs(120);
        assert_eq!(plan(&images, &in_use, 5, min_age, now), (vec!["old".to_string()], 10));
        assert_eq!(plan(&images, &in_use, 15, min_age, now), (vec!["old".to_string(), "recent".to_string()], 20));
        assert_eq!(plan(&images, &in_use, 1000, min_age, now).1, 20, "only what is eligible");
        assert_eq!(plan(&images, &in_use, 1000, Duration::ZERO, now).0.len(), 3, "young goes without a minimum age");
    }
}
