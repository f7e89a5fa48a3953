/** What a transfer's progress notification says: percent, size and rate, and when the connection drops. */
import type * as vscode from 'vscode';
import type { ConnectionState } from '../core/client';
import { formatBytes, formatRate, type Progress } from '../core/format';

type Notification = vscode.Progress<{ message?: string; increment?: number }>;

/** Turns the engine's progress events into increments of the notification's bar. */
export function progressReporter(notification: Notification, also: (p: Progress) => void): (p: Progress) => void {
  let reported = 0;
  return (p) => {
    const percent = p.total > 0 ? (p.bytes / p.total) * 100 : 100;
    notification.report({ increment: percent - reported, message: `${Math.floor(percent)}% of ${formatBytes(p.total)} · ${formatRate(p.rate)}` });
    reported = percent;
    also(p);
  };
}

/** A dropped connection does not fail a transfer: it resumes. Say so while it waits. */
export function reportConnection(onDidChangeState: vscode.Event<ConnectionState>, notification: Notification): vscode.Disposable {
  return onDidChangeState((state) => {
    if (state === 'connecting') notification.report({ message: 'connection lost; resuming when the relay is back…' });
    else if (state === 'connected') notification.report({ message: 'reconnected; resuming where it stopped…' });
  });
}

