/**
 * A recipient that turns slow once its transfer is resumed, so that the resumed part runs as long
 * as a test needs (past a grace period, say, or until it is called off).
 */
import type { Peer } from './harness';

export interface SlowAfterResume {
  /** Whether the recipient has answered a resume (with its resume point). */
  resumed(): boolean;
}

/**
 * From `peer`'s answer to a resume on, each acknowledgement, and its final `done`, goes out
 * `paceMs` after the one before. Before that they go at once: one held back past the resume would
 * be a stale acknowledgement of the first attempt, which the relay rightly refuses.
 * `beforeResume(n)` runs after the n-th acknowledgement of the first attempt (to cut a connection,
 * say), `afterResume(n)` when the n-th paced one is due.
 */
export function slowAfterResume(peer: Peer, paceMs: number, hooks: { beforeResume?: (n: number) => void; afterResume?: (n: number) => void } = {}): SlowAfterResume {
  let resumed = false;
  let pace = Promise.resolve();
  const paced = (send: () => unknown) => (pace = pace.then(() => new Promise((r) => setTimeout(r, paceMs))).then(send).then(() => undefined));
  const answer = peer.client.answer.bind(peer.client);
  peer.client.answer = (id, accept, from) => {
    if (from !== undefined) resumed = true;
    return answer(id, accept, from);
  };
  let before = 0;
  let after = 0;
  const ack = peer.client.ack.bind(peer.client);
  peer.client.ack = (id, index) => {
    if (resumed) {
      hooks.afterResume?.(++after);
      return void paced(() => ack(id, index));
    }
    ack(id, index);
    hooks.beforeResume?.(++before);
  };
  const done = peer.client.done.bind(peer.client);
  peer.client.done = (id, receipt) => paced(() => done(id, receipt));
  return { resumed: () => resumed };
}
