// Starts `meshc lsp` for .mesh files and restarts it when its settings change.
import * as path from "path";
import * as vscode from "vscode";
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";

let client: LanguageClient | undefined;
let output: vscode.OutputChannel | undefined;

/** The meshc executable: the setting as given when it is a bare name (looked
 * up on PATH), else a path resolved against the first workspace folder. */
function meshcPath(): string {
  const configured = vscode.workspace.getConfiguration("meshc").get<string>("path", "meshc").trim() || "meshc";
  if (!configured.includes("/") && !configured.includes("\\")) {
    return configured;
  }
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  return path.isAbsolute(configured) || !folder ? configured : path.join(folder, configured);
}

function initializationOptions(): Record<string, unknown> {
  const cfg = vscode.workspace.getConfiguration("meshc");
  return {
    verify: cfg.get<boolean>("verify", true),
    debounceMs: cfg.get<number>("debounceMs", 2),
    verifyDelayMs: cfg.get<number>("verifyDelayMs", 400),
  };
}

async function start(): Promise<void> {
  output ??= vscode.window.createOutputChannel("meshc");
  const command = meshcPath();
  const serverOptions: ServerOptions = {
    run: { command, args: ["lsp"], transport: TransportKind.stdio },
    debug: { command, args: ["lsp", "--log-level", "debug"], transport: TransportKind.stdio },
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [
      { scheme: "file", language: "mesh" },
      { scheme: "untitled", language: "mesh" },
    ],
    initializationOptions: initializationOptions(),
    outputChannel: output,
    traceOutputChannel: output,
  };
  client = new LanguageClient("meshc", "meshc language server", serverOptions, clientOptions);
  try {
    await client.start();
  } catch (err) {
    client = undefined;
    const open = "Open settings";
    const choice = await vscode.window.showErrorMessage(
      `Could not start the meshc language server (\`${command} lsp\`): ${err}. ` +
        "Install meshpolicy or set `meshc.path` to its meshc executable.",
      open,
    );
    if (choice === open) {
      await vscode.commands.executeCommand("workbench.action.openSettings", "meshc.path");
    }
  }
}

async function stop(): Promise<void> {
  const running = client;
  client = undefined;
  if (running) {
    await running.stop();
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  context.subscriptions.push(
    vscode.commands.registerCommand("meshc.restartServer", async () => {
      await stop();
      await start();
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      const restart = ["meshc.path", "meshc.verify", "meshc.debounceMs", "meshc.verifyDelayMs"]
        .some((key) => event.affectsConfiguration(key));
      if (restart) {
        await stop();
        await start();
      }
    }),
  );
  await start();
}

export async function deactivate(): Promise<void> {
  await stop();
}
