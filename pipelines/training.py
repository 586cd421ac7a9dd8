"""The training pipeline: validate -> prepare -> finetune -> evaluate -> gate -> (register, package, promote, champion)."""

from components.evaluate import evaluate
from components.finetune import finetune
from components.gate import gate
from components.package import package
from components.prepare_data import prepare_data
from components.promote import promote
from components.register import register
from components.set_champion import set_champion
from components.validate_data import validate_data
from kfp import dsl

PIPELINE_NAME = "refinery-training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Validate labelled data, fine-tune, gate against the champion, then register, package and promote.",
)
def training_pipeline(config: str):
    """One pass of the refinement loop; ``config`` is a resolved refinery RunConfig as JSON."""
    validated = validate_data(config=config)
    prepared = prepare_data(config=config).after(validated)
    trained = finetune(config=config, dataset=prepared.outputs["dataset"])
    evaluated = evaluate(config=config, dataset=prepared.outputs["dataset"], model=trained.outputs["model"])
    decided = gate(config=config, evaluation=evaluated.outputs["evaluation"])
    with dsl.If(decided.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (KFP condition, not Python)
        registered = register(
            config=config,
            run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            model=trained.outputs["model"],
            dataset=prepared.outputs["dataset"],
            evaluation=evaluated.outputs["evaluation"],
        )
        packaged = package(config=config, version=registered.outputs["Output"])
        promoted = promote(
            config=config, version=registered.outputs["Output"], bento_tag=packaged.outputs["Output"]
        )
        set_champion(
            config=config,
            version=registered.outputs["Output"],
            bento_tag=packaged.outputs["Output"],
            commit=promoted.outputs["Output"],
        )
