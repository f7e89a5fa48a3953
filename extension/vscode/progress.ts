/**
 * The notification every transfer runs under: cancellable, with percent, size and rate, saying so
 * when the connection drops, and keeping the transfer's entry in the Transfers view current.
 */
import * as vscode from 'vscode';
import type { ConnectionState } from '../core/client';
import { formatBytes, formatRate, type Progress } from '../core/format';
import type { Transfers } from './transfers';

type Notification = vscode.Progress<{ message?: string; increment?: number }>;

/** What differs between transfers' notifications. */
export interface TransferRun {
  readonly title: string;
  /** What the notification says until the first bytes move. */
  readonly waiting?: string;
  /** What the notification's Cancel does: the same as the Transfers view's. */
  readonly cancel: () => void;
}

/**
 * Runs `transfer` (the core's call) under its notification, and settles as it does. It gets the
 * handler for the core's progress events, and the notification for anything else it has to say.
 */
export type RunTransfer = <R>(run: TransferRun, transfer: (onProgress: (p: Progress) => void, notification: Notification) => Promise<R>) => Thenable<R>;

/** One runner per window: transfers all follow the same connection and fill the same Transfers view. */
export function transferRunner(onDidChangeState: vscode.Event<ConnectionState>, transfers: Transfers): RunTransfer {
  return (run, transfer) =>
    vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: run.title, cancellable: true }, async (notification, token) => {
      token.onCancellationRequested(() => run.cancel());
      if (run.waiting !== undefined) notification.report({ message: run.waiting });
      const connection = reportConnection(onDidChangeState, notification);
      try {
        // Each event names its transfer: a send learns its id only once the offer is out.
        return await transfer(progressReporter(notification, (p) => transfers.progress(p.transferId, p)), notification);
      } finally {
        connection.dispose();
      }
    });
}

/** Turns the engine's progress events into increments of the notification's bar. */
function progressReporter(notification: Notification, also: (p: Progress) => void): (p: Progress) => void {
  let reported = 0;
  return (p) => {
    const percent = p.total > 0 ? (p.bytes / p.total) * 100 : 100;
    notification.report({ increment: percent - reported, message: `${Math.floor(percent)}% of ${formatBytes(p.total)} · ${formatRate(p.rate)}` });
    reported = percent;
    also(p);
  };
}

/** A dropped connection does not fail a transfer: it resumes. Say so while it waits. */
function reportConnection(onDidChangeState: vscode.Event<ConnectionState>, notification: Notification): vscode.Disposable {
  return onDidChangeState((state) => {
    if (state === 'connecting') notification.report({ message: 'connection lost; resuming when the relay is back…' });
    else if (state === 'connected') notification.report({ message: 'reconnected; resuming where it stopped…' });
  });
}
