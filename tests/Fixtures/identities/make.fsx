// Writes identities-2.2.tsv: the identity (ResolvedConfig.Identity, the SHA-256 that resume and sweeps compare) of every
// committed config, of the sweep arms' overrides, and of the test configs copied into configs/, as the build this script
// is run against computes it. Run from the repository root against a built tree:
//     dotnet build Research.sln -c Release && dotnet fsi tests/Fixtures/identities/make.fsx
// The committed file was written by the build of release 2.2 (main at d9adfd1), before model kinds became a registry;
// ResolvedConfigTests recomputes every row with the current code and requires the same identity.
#r "../../../artifacts/bin/Research.Abstractions.dll"
#r "../../../artifacts/bin/Tomlyn.dll"
#r "../../../artifacts/bin/Research.Core.dll"

open System
open System.IO
open Research.Core.Config
open Research.Core.Plugins

let root = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "..", ".."))
let bin = Path.Combine(root, "artifacts", "bin")
// Under dotnet fsi the plugins' dependencies (TorchSharp, SkiaSharp, ...) are not on the probing path: resolve them from
// the build output, as the research command does. Without this no plugin loads and their tables hash as written.
System.Runtime.Loader.AssemblyLoadContext.Default.add_Resolving(fun context name ->
    let path = Path.Combine(bin, name.Name + ".dll")
    if File.Exists path then context.LoadFromAssemblyPath path else null)
let relative (path: string) = Path.GetRelativePath(root, path).Replace('\\', '/')
let host = PluginHost.Load([ Path.Combine(bin, "plugins") ], includeBuiltIn = false)
if host.Problems.Count > 0 || host.Plugins.Count = 0 then
    failwithf "the built-in plugins did not load: %s" (String.Join("; ", host.Problems))

let committed =
    Directory.GetFiles(Path.Combine(root, "experiments"), "*.toml", SearchOption.AllDirectories)
    |> Array.map relative |> Array.sort |> List.ofArray
let fixtures =
    Directory.GetFiles(Path.Combine(__SOURCE_DIRECTORY__, "configs"), "*.toml") |> Array.map relative |> Array.sort |> List.ofArray

// The overrides committed sweep scripts set on [model] (experiments/sweeps/*.fsx).
let sweepArms =
    [ "experiments/configs/hessian/forgetting.toml", "study --set model.kind=\"cnn\""
      "experiments/configs/finetune/resnet-fashion04.toml", "train --set model.batch_norm=\"frozen\""
      "experiments/configs/finetune/resnet-fashion04.toml", "train --set model.head_init=\"linear-probe\""
      "experiments/configs/finetune/resnet-fashion04.toml", "train --set model.head_init=\"linear-probe\" --set model.batch_norm=\"frozen\""
      "experiments/configs/finetune/minilm-topics.toml", "train --set model.head_init=\"linear-probe\"" ]

let rows =
    [ for path in committed @ fixtures do
          for command in [ "train"; "study" ] -> path, command
      yield! sweepArms ]

/// "study --set a=1 --set b=2" → ("study", ["a=1"; "b=2"]).
let parse (command: string) =
    let parts = command.Split(" --set ")
    parts[0], List.ofArray parts[1..]

let lines =
    [ yield "# path\tcommand\tidentity"
      for path, command in rows do
          let verb, overrides = parse command
          let config = ConfigLoader.Load(Path.Combine(root, path), overrides)
          let identity = ResolvedConfig.Identity(ResolvedConfig.Canonical(config, host, verb))
          yield $"{path}\t{command}\t{identity}" ]
File.WriteAllText(Path.Combine(__SOURCE_DIRECTORY__, "identities-2.2.tsv"), String.Join("\n", lines) + "\n")
printfn "%d identities written" (lines.Length - 1)
