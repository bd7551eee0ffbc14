// bundle-validate checks an OLM registry+v1 bundle directory offline with the
// library checks `operator-sdk bundle validate` runs (operator-sdk itself is
// not served by the module proxy here): operator-registry's bundle format
// check, then operator-framework/api's bundle, CSV and CRD validators, and
// with -optional the operatorframework suite (OperatorHub metadata,
// capabilities, categories, good practices, deprecated APIs). It adds one
// check those miss: every webhook definition names an install deployment.
// Exit status 1 when any error is found, 0 with warnings only.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	apimanifests "github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	apierrors "github.com/operator-framework/api/pkg/validation/errors"
	registrybundle "github.com/operator-framework/operator-registry/pkg/lib/bundle"
	"github.com/sirupsen/logrus"
	metavalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

type validator interface {
	Validate(...interface{}) []apierrors.ManifestResult
}

func main() {
	optional := flag.Bool("optional", false, "also run the operatorframework optional suite")
	k8sVersion := flag.String("k8s-version", "", "Kubernetes version for the deprecated-API check, e.g. 1.34")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: bundle-validate [-optional] [-k8s-version 1.34] BUNDLE_DIR")
		os.Exit(2)
	}
	dir := flag.Arg(0)
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)

	var errs, warns []string
	if err := registrybundle.NewImageValidator(nil, logrus.NewEntry(logger)).ValidateBundleFormat(dir); err != nil {
		errs = append(errs, fmt.Sprintf("bundle format: %v", err))
	}
	bundle, err := apimanifests.GetBundleFromDir(filepath.Join(dir, registrybundle.ManifestsDir))
	if err != nil {
		fmt.Printf("ERROR loading the bundle: %v\n", err)
		os.Exit(1)
	}
	for _, obj := range bundle.Objects {
		kind := obj.GetObjectKind().GroupVersionKind().Kind
		if kind == "ClusterServiceVersion" || kind == "CustomResourceDefinition" {
			continue
		}
		if ok, _ := registrybundle.IsSupported(kind); !ok {
			errs = append(errs, fmt.Sprintf("%s %q: kind not supported in a registry+v1 bundle", kind, obj.GetName()))
		}
		noNamePrefix := func(string, bool) []string { return nil }
		if problems := metavalidation.ValidateObjectMetaAccessor(metav1.Object(obj), false, noNamePrefix, field.NewPath("metadata")); len(problems) > 0 {
			errs = append(errs, fmt.Sprintf("%s %q: %v", kind, obj.GetName(), problems.ToAggregate()))
		}
	}
	results := validation.BundleValidator.Validate(bundle)
	if bundle.CSV == nil {
		errs = append(errs, "the bundle has no ClusterServiceVersion")
	} else {
		results = append(results, validation.ClusterServiceVersionValidator.Validate(bundle.CSV)...)
		deployments := map[string]bool{}
		for _, d := range bundle.CSV.Spec.InstallStrategy.StrategySpec.DeploymentSpecs {
			deployments[d.Name] = true
		}
		for _, w := range bundle.CSV.Spec.WebhookDefinitions {
			if !deployments[w.DeploymentName] {
				errs = append(errs, fmt.Sprintf("webhookdefinitions %q: deploymentName %q is not an install deployment", w.GenerateName, w.DeploymentName))
			}
		}
	}
	var crds []interface{}
	for _, c := range bundle.V1CRDs {
		crds = append(crds, c)
	}
	for _, c := range bundle.V1beta1CRDs {
		crds = append(crds, c)
	}
	if len(crds) > 0 {
		results = append(results, validation.CustomResourceDefinitionValidator.Validate(crds...)...)
	}
	if *optional {
		objs := bundle.ObjectsToValidate()
		for _, o := range bundle.Objects {
			objs = append(objs, o)
		}
		values := map[string]string{}
		if *k8sVersion != "" {
			values["k8s-version"] = *k8sVersion
		}
		objs = append(objs, values)
		for _, v := range []validator{
			validation.OperatorHubV2Validator,
			validation.StandardCapabilitiesValidator,
			validation.StandardCategoriesValidator,
			validation.GoodPracticesValidator,
			validation.AlphaDeprecatedAPIsValidator,
		} {
			results = append(results, v.Validate(objs...)...)
		}
	}
	for _, r := range results {
		for _, e := range r.Errors {
			errs = append(errs, e.Error())
		}
		for _, w := range r.Warnings {
			warns = append(warns, w.Error())
		}
	}
	for _, w := range warns {
		fmt.Println("WARN  " + w)
	}
	for _, e := range errs {
		fmt.Println("ERROR " + e)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
	fmt.Printf("bundle %s is valid (%d warnings)\n", dir, len(warns))
}
