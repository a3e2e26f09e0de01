//! A channel's deliveries on their way from the broker to the hub. Publications that arrive
//! together are gathered and fanned out together ([`Hub::deliver_all`]: one write per
//! subscriber for all of them); a presence event first sends what was gathered before it,
//! so the channel's order holds. A delivery whose handling panics is skipped (logged and
//! counted), not the channel's deliveries.

use std::sync::Arc;

use herald_protocol::Publication;

use super::Event;
use crate::hub::Hub;
use crate::isolate;

/// Publications fanned out together at most: a burst (or a coalescing window) on a busy
/// channel goes out in fan-outs of this many, which bounds the bytes one fan-out frames.
const MAX_TOGETHER: usize = 256;

pub(super) struct Gathered {
    hub: Arc<Hub>,
    job: &'static str,
    publications: Vec<Publication>,
}

impl Gathered {
    pub(super) fn new(hub: Arc<Hub>, job: &'static str) -> Gathered {
        Gathered {
            hub,
            job,
            publications: Vec::new(),
        }
    }

    pub(super) fn publication(&mut self, publication: Publication) {
        self.publications.push(publication);
        if self.publications.len() >= MAX_TOGETHER {
            self.flush();
        }
    }

    pub(super) fn event(&mut self, event: &Event) {
        self.flush();
        isolate::isolated_sync(self.job, || self.hub.deliver_event(event));
    }

    /// Fans out what was gathered.
    pub(super) fn flush(&mut self) {
        if !self.publications.is_empty() {
            let publications = std::mem::take(&mut self.publications);
            isolate::isolated_sync(self.job, || self.hub.deliver_all(publications));
        }
    }
}
