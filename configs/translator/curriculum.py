"""Extension (the seed's action item 2): Llama -> Mistral, answer teacher, trained and evaluated as soft_plus_text
for the first 1,000 steps and soft_only after, with the evaluation mode's context in the training rows
(train_context=mode) so the curriculum changes what the target reads in training too, and the prompt-contrast
term on. Not a preserved run: measure, do not claim."""
from configs.translator import common


def get_config(arg=None):
    config = common.translator_config("llama_to_mistral", teacher="answer", arg=arg,
                                      loss=dict(prompt_contrast=0.05))
    config.translator.soft_only_curriculum_steps = 1000
    config.translator.train_context = "mode"
    return config
