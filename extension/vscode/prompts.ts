/**
 * The prompts that guard trust decisions (a changed key, "They Match"), in one place so the
 * extension-host tests can answer them: a modal dialog cannot be clicked from inside the extension
 * host. The answerer is installed only through `SecureFileTransferApi.testing`, which activate()
 * returns only when VS Code runs the extension in test mode (ExtensionMode.Test); otherwise every
 * prompt goes to VS Code.
 */
import * as vscode from 'vscode';

export interface Prompt {
  readonly severity: 'info' | 'warning';
  readonly message: string;
  readonly modal: boolean;
  readonly items: readonly string[];
}

/** Returns the button to press, or undefined to dismiss. */
export type PromptAnswerer = (prompt: Prompt) => string | undefined;

let answerer: PromptAnswerer | undefined;

/** Test mode only (see extension.ts); returns a disposable that removes the answerer again. */
export function answerPromptsForTests(answer: PromptAnswerer): vscode.Disposable {
  answerer = answer;
  return new vscode.Disposable(() => {
    if (answerer === answer) answerer = undefined;
  });
}

export function ask(severity: Prompt['severity'], message: string, options: vscode.MessageOptions, ...items: string[]): Thenable<string | undefined> {
  if (answerer) {
    const answer = answerer({ severity, message, modal: options.modal === true, items });
    return Promise.resolve(answer !== undefined && items.includes(answer) ? answer : undefined);
  }
  return severity === 'warning' ? vscode.window.showWarningMessage(message, options, ...items) : vscode.window.showInformationMessage(message, options, ...items);
}
