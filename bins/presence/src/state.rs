//! The presence state machine, free of I/O so its rules can be read and tested on their own.
//!
//! Inputs are the edges' changes and reports (see the crate docs); outputs are
//! [`Announcement`]s, which the caller turns into `user:online`/`user:offline` for the user's
//! contacts. Work per input is proportional to what the input names (one user, or one edge's
//! users), never to the number of connected users.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use switchboard::contract::UserId;
use tokio::time::Instant;
use uuid::Uuid;

/// What to tell a user's contacts.
#[derive(Clone, Debug, PartialEq)]
pub enum Announcement {
    Online {
        user: UserId,
        at: DateTime<Utc>,
    },
    Offline {
        user: UserId,
        last_seen_at: DateTime<Utc>,
    },
    /// `user` is online (since `at`) and `audience` has just come to share a conversation with
    /// them: tell only those (see [`Presence::introduce`]).
    OnlineTo {
        user: UserId,
        at: DateTime<Utc>,
        audience: Vec<UserId>,
    },
}

#[derive(Default)]
struct User {
    /// The edges holding at least one socket of the user.
    edges: HashSet<Uuid>,
    /// Whether contacts were told (or, at start, are taken to know) the user is online.
    announced: bool,
    /// Since when the user is online, as far as we know (the `at` of their `user:online`).
    online_at: Option<DateTime<Utc>>,
    /// Since when the user has had no socket anywhere (the grace period runs from here).
    gone_since: Option<(Instant, DateTime<Utc>)>,
}

struct Edge {
    users: HashSet<UserId>,
    last_heard: Instant,
    interval: Duration,
}

pub struct Presence {
    users: HashMap<UserId, User>,
    edges: HashMap<Uuid, Edge>,
    /// Users in their grace period: the only ones the clock has to look at.
    pending: HashSet<UserId>,
    grace: Duration,
    /// Until then nobody is judged offline, and users in reports are taken as known: the
    /// edges' reports rebuild the state first.
    warm_at: Instant,
    /// How long a warm-up lasts.
    warm_up: Duration,
    /// When the last input came (see [`Presence::heard`]).
    last_input: Instant,
    /// A silence longer than this is taken for a gap in our input (a standby that has just
    /// taken over): the warm-up starts again.
    gap: Duration,
}

impl Presence {
    /// A fresh state, quiet for `warm_up` (two report intervals: every live edge has reported).
    pub fn new(grace: Duration, warm_up: Duration, now: Instant) -> Self {
        Self {
            users: HashMap::new(),
            edges: HashMap::new(),
            pending: HashSet::new(),
            grace,
            warm_at: now + warm_up,
            warm_up,
            last_input: now,
            gap: Duration::MAX,
        }
    }

    /// Takes a silence of our input longer than `gap` for a takeover (see [`Presence::heard`]).
    /// Set it longer than the edges' report interval: while we consume, some edge reports
    /// within every interval.
    pub fn with_gap(mut self, gap: Duration) -> Self {
        self.gap = gap;
        self
    }

    /// Every input passes here first. A copy standing by (single-active-consumer) is started
    /// long before it takes over, and the broker does not tell it when it does: its first input
    /// after a silence longer than `gap` is the sign. What it knows is then partial (it never
    /// heard the inputs its predecessor took), so it warms up again, as a copy that starts does.
    pub fn heard(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_input) > self.gap {
            tracing::info!("input after a silence (a takeover, or our consumer restarted): warming up again");
            self.warm_at = self.warm_at.max(now + self.warm_up);
            self.resume(now);
        }
        self.last_input = now;
    }

    pub fn is_warm(&self, now: Instant) -> bool {
        now >= self.warm_at
    }

    pub fn online(&self, user: &UserId) -> bool {
        self.users.get(user).is_some_and(|u| !u.edges.is_empty() || u.announced)
    }

    /// Users with a socket somewhere. O(1), since it is read after every change: every known
    /// user has an edge, or none and is in `pending` (their grace period).
    pub fn online_count(&self) -> usize {
        self.users.len() - self.pending.len()
    }

    /// An edge's first socket of `user` opened: announced at once, also while warming up.
    ///
    /// A change is news: the edge saw the socket open after we (or the copy before us) were
    /// told about the edge's other users, so the user was not online through this edge. If
    /// they were online through another edge that has not reported to us yet (a takeover),
    /// their contacts hear `user:online` a second time: a repeat of something true, never a
    /// false event, and only for a user who opens a socket on a second edge in the seconds
    /// after a takeover. Holding every announcement until the warm-up ends would instead leave
    /// everyone who connects in those seconds unannounced for up to two report intervals.
    pub fn connected(
        &mut self,
        edge: Uuid,
        user: UserId,
        now: Instant,
        at: DateTime<Utc>,
    ) -> Option<Announcement> {
        self.arrived(edge, user, now, at, true)
    }

    /// `user` is on `edge`. `news`: we saw them arrive (a change), rather than found them in a
    /// report, which while warming up lists users whose contacts were told long ago.
    fn arrived(
        &mut self,
        edge: Uuid,
        user: UserId,
        now: Instant,
        at: DateTime<Utc>,
        news: bool,
    ) -> Option<Announcement> {
        self.edge(edge, now).users.insert(user.clone());
        let announce = news || self.is_warm(now);
        let state = self.users.entry(user.clone()).or_default();
        state.edges.insert(edge);
        if state.gone_since.take().is_some() {
            // Back within the grace period: nobody was told anything, nothing to say.
            self.pending.remove(&user);
            return None;
        }
        if state.announced {
            return None;
        }
        state.announced = true;
        state.online_at = Some(at);
        announce.then_some(Announcement::Online { user, at })
    }

    /// An edge's last socket of `user` closed (or the edge went away).
    ///
    /// While warming up, a user we do not know had a socket on that edge, so they were online,
    /// and the copy before us (a takeover, a restart) told their contacts so: they are recorded
    /// as announced and gone, and go offline after the grace period unless a report shows them
    /// on another edge. (At worst, for a user whose `user:online` was lost too, contacts hear an
    /// offline they did not need: true, and harmless.)
    ///
    /// Once warm, every live edge has reported, so every user with a socket is known: one we do
    /// not know was announced offline already (and forgotten) or never came online here. A late
    /// change about them (an edge's changes queued behind its report) says nothing new, and
    /// taking them for online would swallow their next `user:online` as a return within the
    /// grace period.
    pub fn disconnected(&mut self, edge: Uuid, user: &UserId, now: Instant, at: DateTime<Utc>) {
        if let Some(known) = self.edges.get_mut(&edge) {
            known.users.remove(user);
        }
        if self.is_warm(now) && !self.users.contains_key(user) {
            return;
        }
        let state =
            self.users.entry(user.clone()).or_insert_with(|| User { announced: true, ..User::default() });
        state.edges.remove(&edge);
        if state.edges.is_empty() && state.gone_since.is_none() {
            state.gone_since = Some((now, at));
            self.pending.insert(user.clone());
        }
    }

    /// A full report of an edge's users: whatever differs from what we knew is applied as
    /// changes, so a lost change is healed here.
    pub fn report(
        &mut self,
        edge: Uuid,
        users: Vec<UserId>,
        interval: Duration,
        now: Instant,
    ) -> Vec<Announcement> {
        let known = self.edge(edge, now);
        known.last_heard = now;
        known.interval = interval;
        let reported: HashSet<UserId> = users.into_iter().collect();
        let gone: Vec<UserId> = known.users.difference(&reported).cloned().collect();
        let new: Vec<UserId> = reported.difference(&known.users).cloned().collect();
        let at = Utc::now();
        for user in &gone {
            self.disconnected(edge, user, now, at);
        }
        new.into_iter().filter_map(|user| self.arrived(edge, user, now, at, false)).collect()
    }

    /// A conversation was opened between `participants`: each of them who is online is
    /// announced to the others, who were not their contacts when they came online.
    pub fn introduce(&self, participants: &[UserId]) -> Vec<Announcement> {
        participants
            .iter()
            .filter_map(|user| {
                let state = self.users.get(user).filter(|u| !u.edges.is_empty() || u.announced)?;
                let audience: Vec<UserId> = participants.iter().filter(|p| *p != user).cloned().collect();
                Some(Announcement::OnlineTo {
                    user: user.clone(),
                    at: state.online_at.unwrap_or_else(Utc::now),
                    audience,
                })
            })
            .collect()
    }

    /// An edge said it is stopping, or stopped reporting: its users lose that edge.
    pub fn edge_gone(&mut self, edge: Uuid, now: Instant) {
        let Some(gone) = self.edges.remove(&edge) else { return };
        let at = Utc::now();
        for user in &gone.users {
            self.disconnected(edge, user, now, at);
        }
    }

    /// Our own input was interrupted (the consumer restarted): silence from the edges meant
    /// nothing, so their clocks start again instead of expiring them all at once.
    pub fn resume(&mut self, now: Instant) {
        for edge in self.edges.values_mut() {
            edge.last_heard = now;
        }
    }

    /// The clock: expires silent edges and ends grace periods. Call it often (every 200 ms).
    pub fn tick(&mut self, now: Instant) -> Vec<Announcement> {
        let silent: Vec<Uuid> = self
            .edges
            .iter()
            .filter(|(_, edge)| now.duration_since(edge.last_heard) > edge.interval * 3)
            .map(|(id, _)| *id)
            .collect();
        for edge in silent {
            tracing::warn!(%edge, "an edge stopped reporting; its users are going offline");
            self.edge_gone(edge, now);
        }
        if !self.is_warm(now) {
            return Vec::new();
        }
        let due: Vec<UserId> = self
            .pending
            .iter()
            .filter(|user| {
                self.users
                    .get(*user)
                    .and_then(|u| u.gone_since)
                    .is_some_and(|(since, _)| now.duration_since(since) >= self.grace)
            })
            .cloned()
            .collect();
        let mut announcements = Vec::new();
        for user in due {
            self.pending.remove(&user);
            if let Some(state) = self.users.remove(&user)
                && let Some((_, last_seen_at)) = state.gone_since
                && state.announced
            {
                announcements.push(Announcement::Offline { user, last_seen_at });
            }
        }
        announcements
    }

    fn edge(&mut self, edge: Uuid, now: Instant) -> &mut Edge {
        self.edges.entry(edge).or_insert_with(|| Edge {
            users: HashSet::new(),
            last_heard: now,
            interval: Duration::from_secs(5),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(2);

    fn user(name: &str) -> UserId {
        name.parse().expect("valid")
    }

    fn warm(now: Instant) -> Presence {
        Presence::new(GRACE, Duration::ZERO, now)
    }

    #[test]
    fn online_once_offline_once_after_the_grace_period() {
        let t0 = Instant::now();
        let mut p = warm(t0);
        let (e1, e2) = (Uuid::now_v7(), Uuid::now_v7());
        let a = user("a");
        assert!(matches!(p.connected(e1, a.clone(), t0, Utc::now()), Some(Announcement::Online { .. })));
        assert_eq!(p.connected(e2, a.clone(), t0, Utc::now()), None, "a second edge says nothing");
        p.disconnected(e1, &a, t0, Utc::now());
        assert!(p.tick(t0 + GRACE * 2).is_empty(), "still on e2");
        p.disconnected(e2, &a, t0 + GRACE, Utc::now());
        assert!(p.tick(t0 + GRACE + GRACE / 2).is_empty(), "within the grace period");
        let offline = p.tick(t0 + GRACE * 2);
        assert!(matches!(offline.as_slice(), [Announcement::Offline { user, .. }] if *user == a));
        assert!(p.tick(t0 + GRACE * 3).is_empty(), "once");
    }

    #[test]
    fn a_reload_within_the_grace_period_says_nothing() {
        let t0 = Instant::now();
        let mut p = warm(t0);
        let e = Uuid::now_v7();
        let a = user("a");
        p.connected(e, a.clone(), t0, Utc::now());
        p.disconnected(e, &a, t0, Utc::now());
        assert_eq!(p.connected(e, a.clone(), t0 + GRACE / 2, Utc::now()), None);
        assert!(p.tick(t0 + GRACE * 3).is_empty());
        assert!(p.online(&a));
    }

    #[test]
    fn nobody_is_judged_offline_while_warming_up_and_reports_rebuild_the_state() {
        let t0 = Instant::now();
        let mut p = Presence::new(GRACE, Duration::from_secs(10), t0);
        let (e1, e2) = (Uuid::now_v7(), Uuid::now_v7());
        let a = user("a");
        // a's socket opening on e1 is news, announced at once; a is also on e2, which has not
        // reported yet; a disconnects from e1.
        assert!(matches!(p.connected(e1, a.clone(), t0, Utc::now()), Some(Announcement::Online { .. })));
        p.disconnected(e1, &a, t0, Utc::now());
        assert!(p.tick(t0 + Duration::from_secs(5)).is_empty(), "no judgement while warming up");
        assert!(
            p.report(e2, vec![a.clone()], Duration::from_secs(5), t0 + Duration::from_secs(6)).is_empty()
        );
        assert!(p.tick(t0 + Duration::from_secs(11)).is_empty(), "a is on e2: no false offline");
        // Later changes are reported as usual.
        p.disconnected(e2, &a, t0 + Duration::from_secs(12), Utc::now());
        assert_eq!(p.tick(t0 + Duration::from_secs(15)).len(), 1);
    }

    #[test]
    fn a_late_change_about_a_user_announced_offline_does_not_swallow_their_return() {
        let t0 = Instant::now();
        let mut p = warm(t0);
        let e = Uuid::now_v7();
        let a = user("a");
        p.connected(e, a.clone(), t0, Utc::now());
        // The edge's report says a left (its changes are queued behind it); a goes offline.
        assert!(p.report(e, vec![], Duration::from_secs(5), t0).is_empty());
        let offline = p.tick(t0 + GRACE);
        assert!(matches!(offline.as_slice(), [Announcement::Offline { user, .. }] if *user == a));
        // The queued changes arrive: an old disconnect, then a's return, which is news.
        p.disconnected(e, &a, t0 + GRACE, Utc::now());
        let back = p.connected(e, a.clone(), t0 + GRACE, Utc::now());
        assert!(matches!(&back, Some(Announcement::Online { user, .. }) if *user == a), "{back:?}");
        assert!(p.tick(t0 + GRACE * 3).is_empty());
        assert!(p.online(&a));
    }

    #[test]
    fn a_silent_edge_expires_and_a_resume_forgives_silence() {
        let t0 = Instant::now();
        let mut p = warm(t0);
        let e = Uuid::now_v7();
        let a = user("a");
        p.report(e, vec![a.clone()], Duration::from_secs(1), t0);
        p.resume(t0 + Duration::from_secs(2));
        assert!(
            p.tick(t0 + Duration::from_secs(4)).is_empty(),
            "3 intervals since the resume have not passed"
        );
        assert!(p.tick(t0 + Duration::from_millis(5100)).is_empty(), "expired, now in grace");
        assert_eq!(p.tick(t0 + Duration::from_millis(7200)).len(), 1);
    }

    #[test]
    fn a_report_heals_lost_changes() {
        let t0 = Instant::now();
        let mut p = warm(t0);
        let e = Uuid::now_v7();
        let (a, b) = (user("a"), user("b"));
        p.connected(e, a.clone(), t0, Utc::now());
        let online = p.report(e, vec![b.clone()], Duration::from_secs(5), t0);
        assert!(matches!(online.as_slice(), [Announcement::Online { user, .. }] if *user == b));
        assert_eq!(p.tick(t0 + GRACE).len(), 1, "a's lost disconnect was healed");
        assert_eq!(p.online_count(), 1);
    }

    #[test]
    fn while_warming_up_reports_are_taken_as_known_and_changes_announced() {
        let t0 = Instant::now();
        let mut p = Presence::new(GRACE, Duration::from_secs(10), t0);
        let (e1, e2) = (Uuid::now_v7(), Uuid::now_v7());
        let (a, b) = (user("a"), user("b"));
        assert!(p.report(e1, vec![a.clone()], Duration::from_secs(5), t0).is_empty(), "a was online before");
        let online = p.connected(e2, b.clone(), t0, Utc::now());
        assert!(matches!(online, Some(Announcement::Online { user, .. }) if user == b), "b is news");
        assert_eq!(p.connected(e2, a.clone(), t0, Utc::now()), None, "a is known online");
    }

    #[test]
    fn a_takeover_forgets_nobody_who_leaves_and_judges_nobody_on_partial_knowledge() {
        let t0 = Instant::now();
        let warm_up = Duration::from_secs(3);
        let mut p = Presence::new(GRACE, warm_up, t0).with_gap(Duration::from_secs(2));
        let (e1, e2) = (Uuid::now_v7(), Uuid::now_v7());
        let (a, b) = (user("a"), user("b"));
        // A standby: nothing heard for a minute, then its first input is a's last socket on e1
        // closing. a and b are unknown to it; b is also on e2, which reports a moment later.
        let t1 = t0 + Duration::from_secs(60);
        assert!(p.is_warm(t1));
        p.heard(t1);
        assert!(!p.is_warm(t1), "a takeover warms up again");
        p.disconnected(e1, &a, t1, Utc::now());
        p.heard(t1);
        p.disconnected(e1, &b, t1, Utc::now());
        assert!(p.online(&a), "in the grace period");
        p.heard(t1 + Duration::from_secs(1));
        p.report(e2, vec![b.clone()], Duration::from_secs(1), t1 + Duration::from_secs(1));
        assert!(p.tick(t1 + GRACE).is_empty(), "the grace period is over, but we are warming up");
        let offline = p.tick(t1 + warm_up);
        assert!(
            matches!(offline.as_slice(), [Announcement::Offline { user, .. }] if *user == a),
            "{offline:?}"
        );
        assert!(p.online(&b));
        assert_eq!(p.online_count(), 1);
    }

    #[test]
    fn a_new_conversation_introduces_its_online_participants_to_each_other() {
        let t0 = Instant::now();
        let mut p = warm(t0);
        let e = Uuid::now_v7();
        let (a, b, c) = (user("a"), user("b"), user("c"));
        let at = Utc::now();
        p.connected(e, a.clone(), t0, at);
        p.connected(e, b.clone(), t0, at);
        let introductions = p.introduce(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(
            introductions,
            vec![
                Announcement::OnlineTo { user: a.clone(), at, audience: vec![b.clone(), c.clone()] },
                Announcement::OnlineTo { user: b.clone(), at, audience: vec![a.clone(), c.clone()] },
            ]
        );
        assert!(p.introduce(&[c.clone(), user("d")]).is_empty(), "nobody online");
    }
}
