//! The simulated PLC's behaviour, one model for both of its drivers: `sortd plc-sim` over
//! real sockets ([`super::plc`]) and the deterministic simulator over simulated ones.
//!
//! Pure: the PLC link's [`PlcPeer`] (which acknowledges and de-duplicates SORTs), a
//! conveyor of confirmations waiting for their delay, bounded (when it is full the
//! oldest parcel is reported `lost` at once: the belt cannot hold more), and a power
//! cycle that forgets the link and the belt (a new link session, an empty conveyor) but
//! not its chutes. Which outcome a confirmation reports, when chutes fault and how bytes
//! move are the drivers' choices.
//!
//! Why chute states outlive a power cycle: they are the plant's, not the program's. A
//! full bin is still full after the PLC reboots (it reads the bin sensor again at power
//! on), and a chute an operator disabled on the HMI stays disabled (retentive memory).
//! So the model keeps every chute that is not available across [`PlcModel::restart`],
//! and announces each to the host, as any PLC does to a host session it has not heard
//! from (PROTOCOL.md, "Chute status after a restart"): sortd, seeing a new PLC session,
//! marks every chute available and learns the unavailable ones again from that
//! announcement.

use std::collections::VecDeque;
use std::time::Instant;

use crate::plc::{Outcome, PeerConfig, PlcPeer, SortCommand};

/// The PLC's link end and its conveyor.
#[derive(Debug)]
pub struct PlcModel {
    peer: PlcPeer,
    config: PeerConfig,
    /// Confirmations waiting for their due time, oldest first.
    conveyor: VecDeque<(Instant, SortCommand)>,
    conveyor_max: usize,
    confirmed: [u64; Outcome::ALL.len()],
    confirms_sent: u64,
    restarts: u64,
    chutes_kept: u64,
}

impl PlcModel {
    /// A PLC powered on at `now`, holding at most `conveyor_max` parcels awaiting
    /// confirmation.
    pub fn new(config: PeerConfig, conveyor_max: usize, now: Instant) -> PlcModel {
        PlcModel {
            peer: PlcPeer::new(config, now),
            config,
            conveyor: VecDeque::new(),
            conveyor_max: conveyor_max.max(1),
            confirmed: [0; Outcome::ALL.len()],
            confirms_sent: 0,
            restarts: 0,
            chutes_kept: 0,
        }
    }

    /// The link end.
    pub fn peer(&self) -> &PlcPeer {
        &self.peer
    }

    /// The link end, for the driver's transport calls.
    pub fn peer_mut(&mut self) -> &mut PlcPeer {
        &mut self.peer
    }

    /// A SORT was actuated; its confirmation is due at `due` (`None`: never confirmed).
    /// A full conveyor reports its oldest parcel `lost` at once to make room.
    pub fn on_sort(&mut self, sort: SortCommand, due: Option<Instant>) {
        let Some(due) = due else {
            return;
        };
        if self.conveyor.len() >= self.conveyor_max {
            if let Some((_, oldest)) = self.conveyor.pop_front() {
                self.confirm(&oldest, Outcome::Lost);
            }
        }
        self.conveyor.push_back((due, sort));
    }

    /// Sends the confirmations due at `now`, in order, while the link's window has room;
    /// `outcome` says what happened to each parcel.
    pub fn release_confirms(
        &mut self,
        now: Instant,
        mut outcome: impl FnMut(&SortCommand) -> Outcome,
    ) {
        while let Some((due, sort)) = self.conveyor.front().copied() {
            if due > now || self.peer.window_free() == 0 {
                return;
            }
            let outcome = outcome(&sort);
            if !self.confirm(&sort, outcome) {
                return;
            }
            self.conveyor.pop_front();
        }
    }

    fn confirm(&mut self, sort: &SortCommand, outcome: Outcome) -> bool {
        let sent = self
            .peer
            .confirm(sort.parcel_id, sort.scanner_id, sort.chute, outcome)
            .is_ok();
        if sent {
            self.confirms_sent += 1;
            self.confirmed[outcome.index()] += 1;
        }
        sent
    }

    /// A power cycle at `now`: a new link session (`session`, never 0), no memory of the
    /// SORTs it received, an empty conveyor; the chutes keep their states (announced to
    /// the next host). The driver closes the connection.
    pub fn restart(&mut self, now: Instant, session: u64) {
        self.config.session = session.max(1);
        let chutes: Vec<_> = self.peer.chutes_unavailable().collect();
        self.chutes_kept += chutes.len() as u64;
        self.peer = PlcPeer::new(self.config, now);
        self.peer.remember_chute_states(chutes);
        self.conveyor.clear();
        self.restarts += 1;
    }

    /// When the oldest confirmation on the conveyor is due.
    pub fn next_confirm_due(&self) -> Option<Instant> {
        self.conveyor.front().map(|(due, _)| *due)
    }

    /// Confirmations waiting on the conveyor.
    pub fn confirms_pending(&self) -> usize {
        self.conveyor.len()
    }

    /// Confirmations sent so far.
    pub fn confirms_sent(&self) -> u64 {
        self.confirms_sent
    }

    /// Power cycles so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Chutes not available that power cycles carried over, summed over the restarts.
    pub fn chutes_kept_across_restarts(&self) -> u64 {
        self.chutes_kept
    }

    /// Confirmations sent by outcome (index `code - 1`) since the last call.
    pub fn take_confirmed(&mut self) -> [u64; Outcome::ALL.len()] {
        std::mem::take(&mut self.confirmed)
    }

    /// Whether nothing is waiting: no confirmation on the conveyor, every report
    /// acknowledged by the host.
    pub fn is_settled(&self) -> bool {
        self.conveyor.is_empty() && self.peer.window_free() == self.config.window_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;
    use crate::plc::ChuteState;
    use std::time::Duration;

    fn sort(parcel_id: u64) -> SortCommand {
        SortCommand {
            parcel_id,
            scanner_id: 1,
            chute: 3,
            reason: Reason::SortedPrimary,
            plan_version: 1,
            decided_at_us: 0,
        }
    }

    #[test]
    fn a_full_conveyor_reports_its_oldest_parcel_lost_and_keeps_the_new_one() {
        let now = Instant::now();
        let config = PeerConfig {
            window_max: 8,
            ..PeerConfig::default()
        };
        let mut model = PlcModel::new(config, 2, now);
        let later = Some(now + Duration::from_secs(1));
        model.on_sort(sort(1), later);
        model.on_sort(sort(2), later);
        model.on_sort(sort(3), later);
        assert_eq!(model.confirms_pending(), 2, "bounded");
        let lost = model.take_confirmed();
        assert_eq!(lost[Outcome::Lost.index()], 1);
        model.release_confirms(now + Duration::from_secs(2), |_| Outcome::Diverted);
        assert_eq!(model.confirms_pending(), 0);
        assert_eq!(model.confirms_sent(), 3, "one lost at once, two diverted");
    }

    #[test]
    fn a_restart_forgets_the_conveyor_and_takes_a_new_session_but_keeps_the_chutes() {
        let now = Instant::now();
        let mut model = PlcModel::new(PeerConfig::default(), 16, now);
        model.on_sort(sort(1), Some(now));
        for (chute, state) in [
            (9, ChuteState::Disabled),
            (4, ChuteState::Full),
            (6, ChuteState::Full),
            (6, ChuteState::Available),
        ] {
            model
                .peer_mut()
                .set_chute_state(chute, state)
                .expect("room");
        }
        model.restart(now, 42);
        assert_eq!(model.confirms_pending(), 0);
        assert_eq!(model.restarts(), 1);
        assert!(model.is_settled(), "the reports of the old life are gone");
        assert_eq!(
            model.peer().chutes_unavailable().collect::<Vec<_>>(),
            vec![(4, ChuteState::Full), (9, ChuteState::Disabled)]
        );
    }
}
