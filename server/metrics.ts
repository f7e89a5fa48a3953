/**
 * Prometheus metrics for the relay (prom-client). Each relay has its own registry, so several
 * relays in one process (tests, the VS Code extension) never share counters.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ErrorCode } from '../extension/core/errors';

export type LegOutcome = 'complete' | 'declined' | 'cancelled' | 'failed';

export interface RelayMetrics {
  readonly registry: Registry;
  offer(): void;
  leg(outcome: LegOutcome): void;
  relayed(bytes: number): void;
  refused(code: ErrorCode): void;
}

export function createRelayMetrics(live: () => { connections: number; peers: number; transfers: number }, processMetrics = true): RelayMetrics {
  const registry = new Registry();
  // Process metrics, including nodejs_eventloop_lag_seconds: a relay whose loop lags delays everyone.
  // They start process-wide monitors that are never released, so a host that embeds and restarts
  // relays (the VS Code extension) turns them off.
  if (processMetrics) collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'sft_relay_connected_clients',
    help: 'Open connections, joined or not.',
    registers: [registry],
    collect() {
      this.set(live().connections);
    },
  });
  new Gauge({
    name: 'sft_relay_joined_peers',
    help: 'Peers that proved their identity and are online.',
    registers: [registry],
    collect() {
      this.set(live().peers);
    },
  });
  new Gauge({
    name: 'sft_relay_active_transfers',
    help: 'Transfers offered and not yet finished.',
    registers: [registry],
    collect() {
      this.set(live().transfers);
    },
  });
  const offers = new Counter({ name: 'sft_relay_offers_total', help: 'Offers accepted for routing.', registers: [registry] });
  const legs = new Counter({
    name: 'sft_relay_transfers_total',
    help: 'Transfer legs (one per recipient and attempt: a leg resumed after a dropped connection counts again) by outcome.',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const bytes = new Counter({ name: 'sft_relay_bytes_relayed_total', help: 'Ciphertext bytes forwarded to recipients.', registers: [registry] });
  const refusals = new Counter({ name: 'sft_relay_refusals_total', help: 'Refused connections and messages, by error code.', labelNames: ['code'], registers: [registry] });
  return {
    registry,
    offer: () => offers.inc(),
    leg: (outcome) => legs.inc({ outcome }),
    relayed: (n) => bytes.inc(n),
    refused: (code) => refusals.inc({ code }),
  };
}
