namespace Research.Core.Tracking;


/// <summary>
/// Every path of a run folder, in one place. A run folder holds:
/// <code>
/// config.toml                     the config as given
/// run.sqlite                      the run store
/// checkpoints/NAME/               resumable, best and final checkpoints
/// tasks/initial/model.safetensors   a study's starting weights
/// tasks/task-i/model.safetensors    the weights at task i's end
/// tasks/task-i/along/step-k/model.safetensors   points inside task i (k: steps since the task began)
/// hessian/task-j/                 task j's saved curvature; figures of <c>research analyze hessian</c>
/// probes/                         the probes' fixed draws
/// events.out.tfevents.*           TensorBoard (unless run.tensorboard_dir moves it)
/// </code>
/// </summary>
public sealed record RunLayout(string Root)
{
    public const string ConfigFile = "config.toml";
    public const string WeightsFile = Research.Core.Checkpoints.WeightFile.FileName;

    /// <summary>The layout of the folder at <paramref name="dir"/> (made absolute).</summary>
    public static RunLayout At(string dir) => new(Path.GetFullPath(dir));

    public string Config => Path.Combine(Root, ConfigFile);
    public string Store => Path.Combine(Root, RunStore.FileName);
    public string Checkpoints => Path.Combine(Root, "checkpoints");
    public string Checkpoint(string name) => Path.Combine(Checkpoints, name);

    /// <summary>The study's starting weights (before task 0).</summary>
    public string InitialWeights => Path.Combine(Root, "tasks", "initial", WeightsFile);

    /// <summary>The weights at the end of task i.</summary>
    public string TaskEndWeights(int task) => Path.Combine(Root, "tasks", $"task-{task}", WeightsFile);

    /// <summary>The weights at task i's start: the end of task i − 1, or the initial weights for task 0.</summary>
    public string TaskStartWeights(int task) => task == 0 ? InitialWeights : TaskEndWeights(task - 1);

    /// <summary>The folder of the points saved inside task i.</summary>
    public string AlongFolder(int task) => Path.Combine(Root, "tasks", $"task-{task}", "along");

    /// <summary>The weights <paramref name="stepInTask"/> optimizer steps after task i began.</summary>
    public string AlongWeights(int task, long stepInTask) => Path.Combine(AlongFolder(task), $"step-{stepInTask}", WeightsFile);

    /// <summary>The points saved inside task i, as (steps since the task began, weights file), in step order.</summary>
    public IReadOnlyList<(long StepInTask, string Path)> AlongPoints(int task)
    {
        var dir = AlongFolder(task);
        if (!Directory.Exists(dir)) return [];
        return Directory.GetDirectories(dir, "step-*")
            .Select(d => (Step: long.TryParse(Path.GetFileName(d)["step-".Length..], out var s) ? s : -1, Path: Path.Combine(d, WeightsFile)))
            .Where(p => p.Step >= 0 && File.Exists(p.Path)).OrderBy(p => p.Step).ToList();
    }

    /// <summary>The Hessian analysis' folder: saved curvatures and figures.</summary>
    public string Hessian => Path.Combine(Root, "hessian");

    /// <summary>Task j's saved curvature.</summary>
    public string Curvature(int task) => Path.Combine(Hessian, $"task-{task}");

    public string Probes => Path.Combine(Root, "probes");
}
