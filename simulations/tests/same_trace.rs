//! The swarm model drives the node's machine exactly as the node's event
//! loop does: the model records what it feeds one node's machine (inputs
//! at their times, the node's store changing, the watch or publish it is
//! told to do) and every action the machine asks; a fresh machine, fed
//! the same steps the way the event loop feeds its own (each input at its
//! time, then every action drained), asks the very same actions in the
//! same order. Anything the model decided outside the machine, or fed it
//! another way, would show here.

use std::time::Duration;

use shoal_protocol::machine::{Action, NodeMachine};
use shoal_sim::swarm::{self, ModelStore, OriginParams, SwarmParams, TraceStep};

fn drain(m: &mut NodeMachine<usize, ModelStore>) -> Vec<Action<usize>> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

/// Replays the trace of `node` in a run of `p`; returns the actions the
/// model recorded and the replayed machine's.
fn replay(p: &SwarmParams) -> (Vec<Action<usize>>, Vec<Action<usize>>) {
    let report = swarm::run(p).unwrap();
    let t = report.trace.expect("a trace was asked for");
    let mut m = swarm::machine(p, t.node, t.rotation, t.base, t.blocks.clone());
    let mut recorded = Vec::new();
    let mut replayed = Vec::new();
    for step in t.steps {
        match step {
            TraceStep::Action(a) => recorded.push(a),
            TraceStep::Held(cids) => m.store_mut().hold(&cids),
            TraceStep::Dropped(cids) => m.store_mut().drop_blocks(&cids),
            TraceStep::Watch { at, channel } => {
                m.watch(channel, Vec::new(), t.base + at).unwrap();
                replayed.extend(drain(&mut m));
            }
            TraceStep::Publish { at, channel, data } => {
                m.publish(channel, 0, data, t.base + at).unwrap();
                replayed.extend(drain(&mut m));
            }
            TraceStep::Input { at, input } => {
                m.handle(input, t.base + at);
                replayed.extend(drain(&mut m));
            }
        }
    }
    (recorded, replayed)
}

fn assert_same(p: &SwarmParams, at_least: usize) {
    let (recorded, replayed) = replay(p);
    assert!(
        recorded.len() >= at_least,
        "only {} actions: not much of a trace",
        recorded.len()
    );
    if let Some(i) = (0..recorded.len().min(replayed.len())).find(|i| recorded[*i] != replayed[*i])
    {
        panic!(
            "action {i} differs:\n model:  {:?}\n replay: {:?}",
            recorded[i], replayed[i]
        );
    }
    assert_eq!(recorded.len(), replayed.len());
}

#[test]
fn a_viewer_is_driven_by_the_model_as_by_the_node() {
    // Churn and an origin on thin uplinks: timeouts, HTTP fill-in, peers
    // leaving, presences and blocks from many peers.
    let p = SwarmParams {
        viewers: 12,
        segments: 4,
        leave: 3,
        viewer_uplink: 2_000_000 / 8,
        origin: Some(OriginParams {
            rtt: Duration::from_millis(40),
            rate: 50_000_000 / 8,
        }),
        trace: Some(2),
        ..SwarmParams::default()
    };
    assert_same(&p, 500);
}

#[test]
fn the_broadcaster_is_driven_by_the_model_as_by_the_node() {
    // Publishing, the ration and its end, pacing, and the uplink's sends.
    let p = SwarmParams {
        viewers: 20,
        segments: 3,
        source_uplink: 10_000_000 / 8,
        trace: Some(0),
        ..SwarmParams::default()
    };
    assert_same(&p, 100);
}
