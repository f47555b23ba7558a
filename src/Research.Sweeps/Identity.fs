/// A trial's identity: the identity of its canonical resolved config (Research.Core.Config.ResolvedConfig, the one
/// definition of "the same config" that resume and `research runs compare` use too), so a rerun recognises the
/// trials it has run.
module Research.Sweeps.Identity

open Research.Core.Config
open Research.Core.Plugins

/// A trial's identity and the canonical text it hashes: the config loaded with its overrides, every section with its
/// defaults, plugin options bound and written out in full, the command (train or study) added, the run's label,
/// folder and threads left out, keys sorted. Two trials that differ only in where and how they run are the same trial.
let ofConfig (host: PluginHost) (command: string) (config: RunConfig) : string * string =
    let canonical = ResolvedConfig.Canonical(config, host, command)
    ResolvedConfig.Identity(canonical, host), ResolvedConfig.IdentityJson(canonical, host)
