/** The "Secure File Transfer" output channel. Never given secrets: tokens and keys are not logged. */
import * as vscode from 'vscode';

export type Log = vscode.LogOutputChannel;

export function createLog(): Log {
  return vscode.window.createOutputChannel('Secure File Transfer', { log: true });
}
