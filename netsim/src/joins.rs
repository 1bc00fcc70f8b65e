//! When the members of a room learnt that someone joined it: the figure
//! of a join, and what the drain waits for.

use crate::record::Observed;
use crate::run::{Ctx, Phases};
use crate::transport::NodeIdx;

/// For each join of `phases`, how long after it every member still in the
/// room and up (`alive`) at the end knew of it, in seconds; `None` while
/// one does not.
pub(crate) fn join_waits(
    o: &Observed,
    ctx: &Ctx,
    phases: &Phases,
    alive: &dyn Fn(&NodeIdx) -> bool,
) -> Vec<Option<f64>> {
    let last_of = |events: &[(usize, NodeIdx, f64)], r: usize, x: NodeIdx| {
        events
            .iter()
            .filter(|(er, ex, _)| *er == r && *ex == x)
            .map(|(_, _, t)| *t)
            .fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.max(t))))
    };
    let out_at_end = |r: usize, x: NodeIdx| match (
        last_of(&phases.leaves, r, x),
        last_of(&phases.joins, r, x),
    ) {
        (Some(left), Some(back)) => left > back,
        (Some(_), None) => true,
        _ => false,
    };
    let mut waits = Vec::new();
    for (r, m, at) in &phases.joins {
        let name = crate::plan::room_name(*r);
        // The members in the room at the end who are up: each must know.
        let present = ctx.plan.rooms[*r]
            .iter()
            .filter(|x| alive(x) && !out_at_end(*r, **x));
        let mut worst: Option<f64> = Some(0.0);
        for x in present {
            let known = o
                .view_added
                .get(&(*x, name.clone(), *m))
                .map(|t| t.as_secs_f64())
                .filter(|t| t >= at);
            worst = match (worst, known) {
                (Some(w), Some(t)) => Some(w.max(t - at)),
                _ => None,
            };
        }
        waits.push(worst);
    }
    waits
}
